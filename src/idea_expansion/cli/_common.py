"""What every command shares: the console, error reporting at the command boundary, connections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import psycopg
import typer
from rich.console import Console

from .._exceptions import IdeaExpansionError
from .._settings import Settings
from ..local import resolve_database_url

console = Console()
err_console = Console(stderr=True)

DB_URL_HELP = "PostgreSQL URL; defaults to DATABASE_URL, else the embedded local database."


def fail(message: str) -> NoReturn:
    """Print one red line and exit 1."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Turn idea-expansion and database errors into one line and exit code 1."""
    try:
        yield
    except IdeaExpansionError as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"cannot connect to the database: {str(exc).strip().splitlines()[0]}")


def connect(db_url: str | None) -> psycopg.Connection[Any]:
    """An autocommit connection to the chosen database."""
    url = resolve_database_url(db_url, Settings().database_url)
    return psycopg.connect(url, autocommit=True)
