"""What every command shares: the console, one-line errors at the command boundary, connections,
the client, and table / JSON / CSV output.

User data is never markup. Every name, title, e-mail, reference or error message reaches the terminal
through `safe` (inside our own markup strings) or `literal` (a `rich.text.Text`, no markup at all), which also
show control characters as escapes, so a value can neither style, link, move the cursor nor fake a line.
The consoles do not expand emoji codes (`:white_check_mark:`); our own literals use the characters."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import json
import re
import traceback
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, NoReturn

import psycopg
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._client import IdeaExpansion
from .._exceptions import IdeaExpansionError, NotFoundError
from .._settings import Settings
from ..local import resolve_database_url
from ..types import User

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

DB_URL_HELP = "PostgreSQL URL; defaults to DATABASE_URL, else the embedded local database."


# Set by the app's --debug option for the command being run.
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("idea_expansion_cli_debug", default=False)


def debug_enabled() -> bool:
    return DEBUG.get()


# C0/C1 control characters (ESC starts a terminal escape sequence, CR and LF start a new line) and the
# bidirectional overrides and isolates that reorder how a line reads ("Trojan Source").
_UNSAFE_INLINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_BLOCK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # keeps tab and LF
# Every control character but tab: a CR or LF inside a quoted cell is valid CSV, but printed to a terminal it
# moves the cursor, so a crafted title could overwrite a row or draw a fake one. Shown as escapes instead.
_UNSAFE_CSV = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def printable(value: object, *, multiline: bool = False) -> str:
    """`value` as text a terminal shows as is: control characters appear as escapes (`\\x1b`, `\\n`).
    With `multiline`, line feeds and tabs are kept (for bodies such as a post or a file)."""
    pattern = _UNSAFE_BLOCK if multiline else _UNSAFE_INLINE
    return pattern.sub(_visible, str(value))


def safe(value: object, *, multiline: bool = False) -> str:
    """User data to put inside a markup string of ours: printable, with Rich markup escaped."""
    return escape(printable(value, multiline=multiline))


def literal(value: object, *, multiline: bool = False, style: str = "") -> Text:
    """User data as a renderable that is never parsed for markup or emoji codes."""
    return Text(printable(value, multiline=multiline), style=style)


def fail(message: str) -> NoReturn:
    """Print one red line and exit 1. `message` is plain text (it may hold user data, and our own
    brackets, as in `idea-expansion[llm]`), printed literally."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", literal(message)), soft_wrap=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Turn idea-expansion and database errors into one line and exit code 1 (a traceback with --debug)."""
    try:
        yield
    except (IdeaExpansionError, psycopg.Error, OSError) as exc:
        if debug_enabled():
            err_console.print(literal(traceback.format_exc(), multiline=True), highlight=False)
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
    """Rows as a rich table, or as JSON / CSV for scripts. `title` is plain text, like every cell.

    CSV cells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) get a
    leading `'` (OWASP's advice); a plain number such as `-5` or `2.50` is data, never a formula, and is
    left as it is. Control characters other than tab (line breaks included: in a terminal they move the cursor) are
    written as escapes, as on screen: CSV is often read in a terminal. JSON escapes them itself."""
    records = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in rows]
    if as_json:
        typer.echo(json.dumps([{c: rec.get(c) for c in columns} for rec in records], indent=2, default=str))
        return
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: csv_cell(rec.get(c)) for c in columns} for rec in records)
        typer.echo(buffer.getvalue().rstrip("\n"))
        return
    table = Table(title=literal(title, style="table.title"))
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for rec in records:
        table.add_row(*(literal(_cell(rec.get(c))) for c in columns))
    console.print(table)
    if not records:
        console.print("[dim](no rows)[/]")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs as a formula, and a terminal prints as is."""
    if not isinstance(value, str):
        return value  # numbers, booleans and None: never a formula
    value = _UNSAFE_CSV.sub(_visible, value)
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | Decimal):
        return f"{value:.2f}"
    return str(value)


JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
CsvOption = typer.Option(False, "--csv", help="Print CSV instead of a table.")
