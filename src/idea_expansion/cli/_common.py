"""What every command shares: the console, one-line errors at the command boundary, connections,
the client, and table / JSON / CSV output."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import json
import traceback
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, NoReturn

import psycopg
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from .._client import IdeaExpansion
from .._exceptions import IdeaExpansionError, NotFoundError
from .._settings import Settings
from ..local import resolve_database_url
from ..types import User

console = Console()
err_console = Console(stderr=True)

DB_URL_HELP = "PostgreSQL URL; defaults to DATABASE_URL, else the embedded local database."


# Set by the app's --debug option for the command being run.
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("idea_expansion_cli_debug", default=False)


def debug_enabled() -> bool:
    return DEBUG.get()


def fail(message: str) -> NoReturn:
    """Print one red line and exit 1."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Turn idea-expansion and database errors into one line and exit code 1 (a traceback with --debug)."""
    try:
        yield
    except (IdeaExpansionError, psycopg.Error, OSError) as exc:
        if debug_enabled():
            err_console.print(traceback.format_exc(), markup=False)
        if isinstance(exc, psycopg.OperationalError):
            fail(f"cannot connect to the database: {str(exc).strip().splitlines()[0]}")
        if isinstance(exc, psycopg.Error):
            fail(f"{exc.diag.message_primary or exc} (SQLSTATE {exc.sqlstate})")
        fail(str(exc))


def connect(db_url: str | None) -> psycopg.Connection[Any]:
    """An autocommit superuser connection to the chosen database (for db maintenance)."""
    return psycopg.connect(database_url(db_url), autocommit=True)


def database_url(db_url: str | None) -> str:
    return resolve_database_url(db_url, Settings().database_url)


def open_client(db_url: str | None) -> IdeaExpansion:
    """The service client: direct Postgres for --db-url, else whatever the settings choose."""
    settings = Settings()
    if db_url:
        return IdeaExpansion(settings=settings, backend="postgres", database_url=db_url)
    return IdeaExpansion(settings=settings)


def user_by_email(client: IdeaExpansion, email: str) -> User:
    try:
        return client.users.get_by_email(email)
    except NotFoundError:
        raise NotFoundError(f"no user with e-mail {email} (check the address, or create the user)") from None


def emit(
    rows: Sequence[BaseModel | dict[str, Any]],
    columns: Sequence[str],
    *,
    title: str,
    as_json: bool = False,
    as_csv: bool = False,
) -> None:
    """Rows as a rich table, or as JSON / CSV for scripts."""
    records = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in rows]
    if as_json:
        typer.echo(json.dumps([{c: rec.get(c) for c in columns} for rec in records], indent=2, default=str))
        return
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        typer.echo(buffer.getvalue().rstrip("\n"))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for rec in records:
        table.add_row(*(_cell(rec.get(c)) for c in columns))
    console.print(table)
    if not records:
        console.print("[dim](no rows)[/]")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | Decimal):
        return f"{value:.2f}"
    return str(value)


JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
CsvOption = typer.Option(False, "--csv", help="Print CSV instead of a table.")
