from __future__ import annotations

import typer

from .db import db_app
from .worker import worker_command

app = typer.Typer(
    name="idea-expansion",
    help="Automated Idea Expansion on Supabase: database, admin and pipeline commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
app.command("worker")(worker_command)


def main() -> None:
    """Console-script entry point."""
    app()
