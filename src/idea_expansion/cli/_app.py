from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

from .._version import __version__
from ._common import DEBUG, EMBEDDED_ANNOUNCED
from ._logging import LogLevel, configure_logging
from .admin import admin_app
from .credentials import credentials_app
from .db import db_app
from .demo import demo_command
from .everyday import credits_command, enqueue_command, expand_command, ideas_app, outputs_app
from .report import report_app
from .users import users_app
from .worker import worker_command

app = typer.Typer(
    name="idea-expansion",
    help="Automated Idea Expansion on Supabase: database, admin, reports and the expansion pipeline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    """The installed distribution's version (the source tree's when it is not installed)."""
    try:
        return importlib.metadata.version("idea-expansion")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"idea-expansion {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            case_sensitive=False,
            help="Log lines from this level up, on stderr: debug, info, warning, error "
            "(default: warning; info for the worker).",
        ),
    ] = None,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Write log lines as JSON objects (ts, level, logger, message, ...).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    DEBUG.set(debug)
    EMBEDDED_ANNOUNCED.set(False)
    default = LogLevel.INFO if ctx.invoked_subcommand == "worker" else LogLevel.WARNING
    ctx.call_on_close(configure_logging(log_level or default, as_json=log_json))


app.command("demo")(demo_command)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(report_app, name="report")
app.add_typer(users_app, name="users")
app.add_typer(credentials_app, name="credentials")
app.add_typer(ideas_app, name="ideas")
app.add_typer(outputs_app, name="outputs")
app.command("expand")(expand_command)
app.command("enqueue")(enqueue_command)
app.command("credits")(credits_command)
app.command("worker")(worker_command)


def main() -> None:
    """Console-script entry point."""
    app()
