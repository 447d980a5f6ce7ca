"""PostgresBackend: the same semantics as PostgREST, over a direct connection.

Every call is one transaction that does what PostgREST does per request: switch to the request's role
and set its JWT claims in one statement (`set_config('role', ..., true)` is SET LOCAL ROLE), run the
statement, commit. RLS, grants and the database functions therefore decide exactly as they would
behind the Supabase API.

The four statements travel in one pipeline and the server answers them together: one round trip per
call. They are explicit statements, not psycopg's `conn.transaction()`, which would wait for BEGIN and
for COMMIT. After an error the server skips to the pipeline's Sync; a transaction left open or failed
is then rolled back before the connection goes back to the pool: the only path with a second trip
(and a third when psycopg, after any ROLLBACK, deallocates the statements it had prepared).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, cast
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.abc import Params, QueryNoTemplate
from psycopg.pq import ExecStatus, TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from .._exceptions import APIConnectionError, APIError, APITimeoutError, InvalidRequestError, error_from_code
from ..local.compat import database_kind
from ._base import Delete, Eq, Filter, In, Insert, Is, Json, Keyset, Request, Rpc, Scope, Select, Update
from ._connect import check_database_url, connect_once, with_connect_timeout

__all__ = ["PostgresBackend", "set_request_context"]

BEGIN = b"begin"
COMMIT = b"commit"
REQUEST_CONTEXT = b"select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"
OPEN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
ROWS = ExecStatus.TUPLES_OK

_SCHEMA = "public"


class PostgresBackend:
    """Runs requests on a psycopg connection pool, one PostgREST-style transaction per call, sent in one
    round trip (`query`)."""

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        statement_timeout_ms: int = 30_000,
    ) -> None:
        self._arguments: dict[str, Any] = {
            "database_url": database_url,
            "min_size": min_size,
            "max_size": max_size,
            "timeout": timeout,
            "statement_timeout_ms": statement_timeout_ms,
        }
        check_database_url(database_url)  # a malformed URL is a ConfigurationError, at once
        connect_kwargs = with_connect_timeout(database_url, connection_arguments(database_url, statement_timeout_ms))
        # One plain connection first: an unreachable database fails here in seconds with libpq's reason,
        # where the pool would retry, log a warning per attempt and time out without saying why.
        connect_once(database_url, connect_kwargs)
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            database_url,
            connection_class=cast("type[psycopg.Connection[dict[str, Any]]]", psycopg.Connection),
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=connect_kwargs,
            configure=configure_connection,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise APIConnectionError(f"cannot connect to the database within {timeout:.0f}s") from exc
        self._kind: str | None = None

    def rebuild_arguments(self) -> dict[str, Any]:
        """The arguments that build an equal backend in another process (a worker)."""
        return dict(self._arguments)

    def close(self) -> None:
        self._pool.close()

    def database_kind(self) -> str:
        """`"plain"`, `"compat"` or `"supabase"` (see `idea_expansion.local.database_kind`), read on first
        use and kept: the local storage asks before each call, and most clients never store a file."""
        if self._kind is None:
            with self._connection() as conn:
                self._kind = database_kind(conn)
        return self._kind

    def query(self, statement: QueryNoTemplate, params: Params | None, scope: Scope) -> list[dict[str, Any]]:
        """Run one statement as `scope`, PostgREST-style, in one round trip; returns its rows (none for a
        statement that returns none). Database errors become idea-expansion errors."""
        context = (scope.role, json.dumps(scope.claims()))
        with self._connection() as conn:
            failure: psycopg.Error | None = None
            try:
                with conn.pipeline():
                    # An error can surface at any of these (psycopg reads results as they arrive) or at the
                    # pipeline's Sync. It is kept and raised after the block: raised through the block,
                    # psycopg would log a warning naming the connection for every failed request.
                    try:
                        conn.execute(BEGIN)
                        conn.execute(REQUEST_CONTEXT, context)
                        cursor = conn.execute(statement, params)
                        conn.execute(COMMIT)
                    except psycopg.Error as exc:
                        failure = exc
            except psycopg.Error as exc:
                failure = failure or exc
            except BaseException:
                _end_transaction(conn)
                raise
            if failure is not None:
                _end_transaction(conn)
                raise failure
            result = cursor.pgresult
            if result is None or result.status != ROWS:
                return []
            try:
                return cursor.fetchall()
            except psycopg.DataError as exc:
                raise unreadable_result(exc) from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection; database errors become idea-expansion errors."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout, UnicodeEncodeError) as exc:
            raise translated_error(exc) from exc

    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        query, params = compile_statement(request, scope)
        return self.query(query, params, scope)

    def rpc(self, request: Rpc, scope: Scope) -> Any:
        query, params = compile_rpc(request)
        return rpc_result(request, self.query(query, params, scope))


def connection_arguments(database_url: str, statement_timeout_ms: int) -> dict[str, Any]:
    """How every pooled connection is opened (the sync and the async backend alike)."""
    arguments: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "options": f"-c statement_timeout={statement_timeout_ms}",
        "application_name": "idea-expansion",
    }
    if _behind_transaction_pooler(database_url):
        # Supavisor / PgBouncer in transaction mode cannot keep server-side prepared statements.
        arguments["prepare_threshold"] = None
    return arguments


def rpc_result(request: Rpc, rows: list[dict[str, Any]]) -> Any:
    """A function call's answer, shaped as PostgREST shapes it, from the rows of its statement."""
    if request.returns == "rows":
        return rows
    if request.returns == "values":
        return [next(iter(row.values())) for row in rows]
    if request.returns == "row":
        # A function returning a null composite yields one row of nulls, as PostgREST would say null.
        return rows[0] if rows and any(v is not None for v in rows[0].values()) else None
    return rows[0]["result"] if rows else None


def translated_error(exc: psycopg.Error | PoolTimeout | UnicodeEncodeError) -> Exception:
    """The idea-expansion error for anything a pooled connection raised (the sync and async backends)."""
    if isinstance(exc, UnicodeEncodeError) or (isinstance(exc, psycopg.DataError) and exc.sqlstate is None):
        # A value psycopg cannot send (text with a lone surrogate or a NUL): refused before it reaches the
        # server, which would refuse it as a data exception (class 22) too, so it is the same error here.
        return InvalidRequestError(f"a value the database cannot store: {exc}", code="22000")
    if isinstance(exc, PoolTimeout):
        return APITimeoutError("no database connection became free in time")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return APITimeoutError(f"the database did not answer in time: {exc.diag.message_primary}")
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return APIConnectionError(f"database connection failed: {exc}")
    return mapped_error(exc)


def unreadable_result(exc: psycopg.DataError) -> APIError:
    """The server answered and the transaction committed (the rows arrive with the COMMIT's answer); only
    turning a value into Python failed, as an SDK model's check can fail after PostgREST commits. Say
    so, so that nobody retries a write that happened."""
    return APIError(
        "the request committed, but a value it returned cannot be read in Python",
        code=exc.sqlstate,
        details=str(exc),
        hint="the change was made: do not retry it",
    )


def set_request_context(conn: psycopg.Connection[Any], scope: Scope) -> None:
    """What PostgREST does at the start of every request transaction, in one statement:
    `set_config('role', ..., true)` is SET LOCAL ROLE, then the JWT claims for this transaction."""
    conn.execute(REQUEST_CONTEXT, (scope.role, json.dumps(scope.claims())))


_json_decode = json.JSONDecoder().decode


def _decode_json(encoding: str, data: str | bytes) -> Any:
    """What `json.loads` returns for the server's text, without its encoding detection on bytes, which
    cost as much as the parsing (a page of 50 ideas holds 100 json values): the connection says its
    encoding."""
    return _json_decode(data if isinstance(data, str) else data.decode(encoding))


@functools.cache
def _json_loads(encoding: str) -> Callable[[str | bytes], Any]:
    # One object per encoding, and not a closure: psycopg caches a loader class per loads function
    # (and warns of a leak for closures, which it cannot cache).
    return functools.partial(_decode_json, encoding)


def configure_connection(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Set up each new pooled connection (no round trip)."""
    # Not for SQL_ASCII ("ascii" here): such a database hands over bytes in no declared encoding, which
    # json.loads' own detection reads as UTF-8, as before.
    if conn.info.encoding != "ascii":
        set_json_loads(_json_loads(conn.info.encoding), conn)


def _end_transaction(conn: psycopg.Connection[Any]) -> None:
    """Roll back what a failed request left open, so the pool gets the connection back idle (it would
    otherwise roll back itself, with a warning). A broken connection is left to the pool to discard."""
    if conn.broken or conn.pgconn.transaction_status not in OPEN_TRANSACTION:
        return
    with suppress(psycopg.Error):
        conn.rollback()


def _behind_transaction_pooler(url: str) -> bool:
    """Supabase's transaction-mode pooler listens on 6543 (pooler.supabase.com hosts)."""
    return ":6543" in url or "pooler.supabase.com" in url or "port=6543" in url


def mapped_error(exc: psycopg.Error) -> Exception:
    """The idea-expansion error for a database error (by SQLSTATE)."""
    diag = exc.diag
    return error_from_code(
        exc.sqlstate,
        diag.message_primary or str(exc),
        details=diag.message_detail,
        hint=diag.message_hint,
        raw={
            "code": exc.sqlstate,
            "message": diag.message_primary,
            "details": diag.message_detail,
            "hint": diag.message_hint,
            "constraint": diag.constraint_name,
            "table": diag.table_name,
        },
    )


def _adapt(value: Any) -> Any:
    return Jsonb(value.value) if isinstance(value, Json) else value


@functools.lru_cache(maxsize=4096)
def _quoted(name: str) -> str:
    """`name` as a quoted identifier, as `psycopg.sql.Identifier` quotes it. Cached, and statements are
    plain strings: composing `psycopg.sql` objects on every call cost about 5% of a page of 50 rows."""
    return sql.Identifier(name).as_string(None)


def _table(name: str) -> str:
    return f"{_quoted(_SCHEMA)}.{_quoted(name)}"


_ENUM_VALUE = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _enum_literal(value: object) -> str:
    """A flag, or an enum member's value, as an SQL literal. Only booleans and lower-case words are written
    in, so nothing that needs quoting (or could end the literal) ever reaches the statement. Exactly `bool`
    and `str`: a subclass could format itself as something other than the text checked here."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is not str or not _ENUM_VALUE.fullmatch(value):
        raise InvalidRequestError(f"not an enum value: {value!r}")
    return f"'{value}'"


def _where(filters: Sequence[Filter], params: list[Any], me: UUID | None = None) -> str:
    """The WHERE clause. `me`: the user a user client's request runs as; a filter on that id is written as
    the policies write it, `(select auth.uid())`, the same user, read from the request's claims."""
    if not filters:
        return ""
    parts: list[str] = []
    for f in filters:
        if isinstance(f, Eq) and f.literal:
            parts.append(f"{_quoted(f.column)} = {_enum_literal(f.value)}")
        elif isinstance(f, Eq) and me is not None and type(f.value) is UUID and f.value == me:
            # Not a parameter: a statement with none is planned once per connection, and one with a
            # parameter anew on every call, which under RLS cost a user's own short lists (their blog
            # posts, their receipts) 1.2-2x the service role's.
            parts.append(f"{_quoted(f.column)} = (select auth.uid())")
        elif isinstance(f, Eq):
            parts.append(f"{_quoted(f.column)} = %s")
            params.append(_adapt(f.value))
        elif isinstance(f, In):
            parts.append(f"{_quoted(f.column)} = any(%s)")
            params.append(list(f.values))
        elif isinstance(f, Is):
            keyword = {None: "null", True: "true", False: "false"}[f.value]
            parts.append(f"{_quoted(f.column)} is {keyword}")
        elif isinstance(f, Keyset):
            parts.append(f"({_quoted(f.column)}, id) < (%s, %s)")
            params.extend([f.sort_value, f.id])
        else:  # pragma: no cover - the Filter union is closed
            raise InvalidRequestError(f"unsupported filter {f!r}")
    return " where " + " and ".join(parts)


def _count(name: str, value: object) -> int:
    """A LIMIT or OFFSET: a non-negative int (a bool is not a count), refused before it reaches SQL."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"{name} must be a non-negative integer, not {value!r}", code="22023")
    return value


_RETURNING = " returning *"  # PostgREST's return=representation


def compile_request(request: Request, scope: Scope | None = None) -> tuple[sql.Composed, list[Any]]:
    """The SQL statement (and parameters) PostgREST would run for a request."""
    text, params = compile_statement(request, scope)
    return sql.Composed([sql.SQL(text)]), params


def compile_statement(request: Request, scope: Scope | None = None) -> tuple[str, list[Any]]:
    """The statement (a plain string) and parameters PostgREST would run for a request (as `scope`)."""
    params: list[Any] = []
    me = scope.user_id if scope is not None and scope.role == "authenticated" else None
    if isinstance(request, Select):
        columns = ", ".join(_quoted(c) for c in request.columns) if request.columns else "*"
        query = f"select {columns} from {_table(request.table)}" + _where(request.filters, params, me)
        if request.order:
            query += " order by " + ", ".join(
                f"{_quoted(o.column)} {'desc' if o.descending else 'asc'}" for o in request.order
            )
        # LIMIT and OFFSET are written into the statement (as integers, so never anything else): a
        # prepared statement's generic plan for `limit $n` assumes a tenth of the rows are wanted, so
        # every list the index does not narrow to one user was planned anew on every call.
        if request.limit is not None:
            query += f" limit {_count('limit', request.limit):d}"
        if request.offset:
            query += f" offset {_count('offset', request.offset):d}"
        return query, params
    if isinstance(request, Insert):
        return _compile_insert(request)
    if isinstance(request, Update):
        if not request.values:
            raise InvalidRequestError("nothing to update")
        assignments = ", ".join(f"{_quoted(column)} = %s" for column in request.values)
        params.extend(_adapt(v) for v in request.values.values())
        query = f"update {_table(request.table)} set {assignments}"
        return query + _where(request.filters, params, me) + _RETURNING, params
    if isinstance(request, Delete):
        query = f"delete from {_table(request.table)}"
        return query + _where(request.filters, params, me) + _RETURNING, params
    raise InvalidRequestError(f"unsupported request {request!r}")  # pragma: no cover


def _compile_insert(request: Insert) -> tuple[str, list[Any]]:
    if not request.rows:
        raise InvalidRequestError("nothing to insert")
    columns = list(request.rows[0])
    if any(list(row) != columns for row in request.rows):
        raise InvalidRequestError("every inserted row must have the same columns")
    params: list[Any] = []
    row_values = "(" + ", ".join("%s" for _ in columns) + ")"
    values = ", ".join(row_values for _ in request.rows)
    for row in request.rows:
        params.extend(_adapt(row[c]) for c in columns)
    names = ", ".join(_quoted(c) for c in columns)
    query = f"insert into {_table(request.table)} ({names}) values {values}"
    if request.on_conflict:
        # Exactly PostgREST's merge-duplicates upsert: every sent column is assigned, the conflict
        # columns included, so column grants are checked the same way on both backends.
        targets = ", ".join(_quoted(c) for c in request.on_conflict)
        query += f" on conflict ({targets}) do update set "
        query += ", ".join(f"{_quoted(c)} = excluded.{_quoted(c)}" for c in columns)
    return query + _RETURNING, params


_ARGUMENT_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def compile_rpc(request: Rpc) -> tuple[str, dict[str, Any]]:
    """The statement and parameters that call a function as PostgREST's /rpc does."""
    # A name also becomes a %(name)s placeholder, which it could end early: only plain SQL names pass
    # (the SDK's own, p_user_id and the like), as psycopg.sql.Placeholder checked before.
    for name in request.args:
        if not _ARGUMENT_NAME.fullmatch(name):
            raise InvalidRequestError(f"invalid argument name {name!r} for {request.function}", code="22023")
    args = ", ".join(f"{_quoted(name)} => %({name})s" for name in request.args)
    call = f"{_table(request.function)}({args})"
    params = {k: _adapt(v) for k, v in request.args.items()}
    if request.returns == "scalar":
        return f"select {call} as result", params
    return f"select * from {call} as result", params
