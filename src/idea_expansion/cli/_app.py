from __future__ import annotations

from typing import Annotated

import typer

from ._common import DEBUG, EMBEDDED_ANNOUNCED
from .admin import admin_app
from .db import db_app
from .demo import demo_command
from .everyday import credits_command, expand_command, ideas_app, outputs_app
from .report import report_app
from .worker import worker_command

app = typer.Typer(
    name="idea-expansion",
    help="Automated Idea Expansion on Supabase: database, admin, reports and the expansion pipeline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
) -> None:
    DEBUG.set(debug)
    EMBEDDED_ANNOUNCED.set(False)


app.command("demo")(demo_command)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(report_app, name="report")
app.add_typer(ideas_app, name="ideas")
app.add_typer(outputs_app, name="outputs")
app.command("expand")(expand_command)
app.command("credits")(credits_command)
app.command("worker")(worker_command)


def main() -> None:
    """Console-script entry point."""
    app()
