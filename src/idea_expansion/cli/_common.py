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
import uuid
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
from ..backends._connect import check_database_url, with_connect_timeout
from ..local import EMBEDDED, resolve_database_url
from ..types import User

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

DB_URL_HELP = "PostgreSQL URL (or `embedded`); defaults to DATABASE_URL, else the embedded local database."
EMBEDDED_NOTICE = "Using the embedded local database (set DATABASE_URL to use another)."


# Set by the app's --debug option for the command being run.
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("idea_expansion_cli_debug", default=False)
# Whether the command being run has said it fell back to the embedded database (it says so once).
EMBEDDED_ANNOUNCED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "idea_expansion_cli_embedded_announced", default=False
)


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
    return connect_url(database_url(db_url))


def connect_url(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to `url`; a malformed URL or a host that does not answer fails at once, as
    for the SDK's clients."""
    check_database_url(url)
    return psycopg.connect(url, autocommit=True, **with_connect_timeout(url, {}))


def database_url(db_url: str | None) -> str:
    """The database a command works on directly: --db-url, else DATABASE_URL, else the embedded one."""
    configured = Settings().database_url
    chosen = db_url or (configured.get_secret_value() if configured is not None else None)
    if not chosen:
        chosen = _embedded_default()
    return resolve_database_url(chosen, None)


def open_client(db_url: str | None) -> IdeaExpansion:
    """The service client: direct Postgres for --db-url, else whatever the settings choose, else the
    embedded database (the SDK never falls back to it; the command line does, and says so)."""
    settings = Settings()
    if db_url:
        return IdeaExpansion(settings=settings, backend="postgres", database_url=db_url)
    if _names_no_database(settings):
        return IdeaExpansion(settings=settings, backend="postgres", database_url=_embedded_default())
    return IdeaExpansion(settings=settings)


def _names_no_database(settings: Settings) -> bool:
    """Whether the settings leave the choice of database to the command line: no DATABASE_URL, and no
    SUPABASE_URL unless the Postgres backend is forced (a forced REST backend needs no database)."""
    if settings.database_url is not None and settings.database_url.get_secret_value():
        return False
    return settings.backend == "postgres" or (settings.backend is None and not settings.supabase_url)


def _embedded_default() -> str:
    """The command line's default database, announced in one line on stderr (once per command)."""
    if not EMBEDDED_ANNOUNCED.get():
        EMBEDDED_ANNOUNCED.set(True)
        err_console.print(EMBEDDED_NOTICE, highlight=False, soft_wrap=True)
    return EMBEDDED


def user_by_email(client: IdeaExpansion, email: str) -> User:
    try:
        return client.users.get_by_email(email)
    except NotFoundError:
        raise NotFoundError(f"no user with e-mail {email} (check the address, or create the user)") from None


def user_by_reference(client: IdeaExpansion, reference: str) -> User:
    """A user by id (a UUID) or else by e-mail address."""
    try:
        user_id = uuid.UUID(reference.strip())
    except ValueError:
        return user_by_email(client, reference)
    try:
        return client.users.get(user_id)
    except NotFoundError:
        raise NotFoundError(f"no user with id {user_id}") from None


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any] | None) -> None:
    """`value` as JSON on stdout, and nothing else: models as `model_dump(mode="json")` (nested models in a
    dict too). For scripts: notices go to stderr."""
    typer.echo(json.dumps(_jsonable(value), indent=2, default=str))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def notice(message: str) -> None:
    """One line for the person at the terminal, on stderr (stdout may be a script's JSON). Plain text."""
    err_console.print(literal(message), soft_wrap=True)


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
