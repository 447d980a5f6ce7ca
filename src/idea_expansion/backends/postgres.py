"""PostgresBackend: the same semantics as PostgREST, over a direct connection.

Every call is one transaction that does what PostgREST does per request: switch to the request's role
and set its JWT claims in one statement (`set_config('role', ..., true)` is SET LOCAL ROLE), run the
statement, commit. RLS, grants and the database functions therefore decide exactly as they would
behind the Supabase API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from .._exceptions import ConnectionError, InvalidRequestError, TimeoutError, error_from_code
from ._base import Delete, Eq, Filter, In, Insert, Is, Json, Keyset, Request, Rpc, Scope, Select, Update

__all__ = ["PostgresBackend", "set_request_context"]

_SCHEMA = "public"


class PostgresBackend:
    """Runs requests on a psycopg connection pool, one PostgREST-style transaction per call."""

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        statement_timeout_ms: int = 30_000,
    ) -> None:
        connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "application_name": "idea-expansion",
        }
        if _behind_transaction_pooler(database_url):
            # Supavisor / PgBouncer in transaction mode cannot keep server-side prepared statements.
            connect_kwargs["prepare_threshold"] = None
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            database_url,
            connection_class=cast("type[psycopg.Connection[dict[str, Any]]]", psycopg.Connection),
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=connect_kwargs,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise ConnectionError(f"cannot connect to the database within {timeout:.0f}s") from exc

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def transaction(self, scope: Scope) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One request transaction as `scope`; database errors become idea-expansion errors."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                set_request_context(conn, scope)
                yield conn
        except psycopg.errors.QueryCanceled as exc:
            raise TimeoutError(f"the database did not answer in time: {exc.diag.message_primary}") from exc
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:
                raise ConnectionError(f"database connection failed: {exc}") from exc
            raise _mapped(exc) from exc
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        except PoolTimeout as exc:
            raise TimeoutError("no database connection became free in time") from exc

    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        query, params = compile_request(request)
        with self.transaction(scope) as conn:
            return conn.execute(query, params).fetchall()

    def rpc(self, request: Rpc, scope: Scope) -> Any:
        args = sql.SQL(", ").join(
            sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in request.args
        )
        call = sql.SQL("{}.{}({})").format(sql.Identifier(_SCHEMA), sql.Identifier(request.function), args)
        params = {k: _adapt(v) for k, v in request.args.items()}
        if request.returns == "scalar":
            query = sql.SQL("select {} as result").format(call)
        else:
            query = sql.SQL("select * from {} as result").format(call)
        with self.transaction(scope) as conn:
            rows = conn.execute(query, params).fetchall()
        if request.returns == "rows":
            return rows
        if request.returns == "values":
            return [next(iter(row.values())) for row in rows]
        if request.returns == "row":
            # A function returning a null composite yields one row of nulls, as PostgREST would say null.
            return rows[0] if rows and any(v is not None for v in rows[0].values()) else None
        return rows[0]["result"] if rows else None


def set_request_context(conn: psycopg.Connection[Any], scope: Scope) -> None:
    """What PostgREST does at the start of every request transaction, in one round trip:
    `set_config('role', ..., true)` is SET LOCAL ROLE, then the JWT claims for this transaction."""
    conn.execute(
        "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
        (scope.role, json.dumps(scope.claims())),
    )


def _behind_transaction_pooler(url: str) -> bool:
    """Supabase's transaction-mode pooler listens on 6543 (pooler.supabase.com hosts)."""
    return ":6543" in url or "pooler.supabase.com" in url or "port=6543" in url


def _mapped(exc: psycopg.Error) -> Exception:
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


def _table(name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(_SCHEMA), sql.Identifier(name))


def _where(filters: Sequence[Filter], params: list[Any]) -> sql.Composable:
    if not filters:
        return sql.SQL("")
    parts: list[sql.Composable] = []
    for f in filters:
        if isinstance(f, Eq):
            parts.append(sql.SQL("{} = %s").format(sql.Identifier(f.column)))
            params.append(_adapt(f.value))
        elif isinstance(f, In):
            parts.append(sql.SQL("{} = any(%s)").format(sql.Identifier(f.column)))
            params.append(list(f.values))
        elif isinstance(f, Is):
            keyword = {None: "null", True: "true", False: "false"}[f.value]
            parts.append(sql.SQL("{} is " + keyword).format(sql.Identifier(f.column)))
        elif isinstance(f, Keyset):
            parts.append(sql.SQL("({}, id) < (%s, %s)").format(sql.Identifier(f.column)))
            params.extend([f.sort_value, f.id])
        else:  # pragma: no cover - the Filter union is closed
            raise InvalidRequestError(f"unsupported filter {f!r}")
    return sql.SQL(" where ") + sql.SQL(" and ").join(parts)


def _returning() -> sql.Composable:
    return sql.SQL(" returning *")  # PostgREST's return=representation


def compile_request(request: Request) -> tuple[sql.Composed, list[Any]]:
    """The SQL statement (and parameters) PostgREST would run for a request."""
    params: list[Any] = []
    if isinstance(request, Select):
        columns: sql.Composable = (
            sql.SQL(", ").join(sql.Identifier(c) for c in request.columns) if request.columns else sql.SQL("*")
        )
        query: sql.Composed = sql.SQL("select {} from {}").format(columns, _table(request.table))
        query += _where(request.filters, params)
        if request.order:
            query += sql.SQL(" order by ") + sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(o.column), sql.SQL("desc" if o.descending else "asc"))
                for o in request.order
            )
        if request.limit is not None:
            query += sql.SQL(" limit %s")
            params.append(request.limit)
        if request.offset:
            query += sql.SQL(" offset %s")
            params.append(request.offset)
        return query, params
    if isinstance(request, Insert):
        return _compile_insert(request)
    if isinstance(request, Update):
        if not request.values:
            raise InvalidRequestError("nothing to update")
        assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(column)) for column in request.values)
        params.extend(_adapt(v) for v in request.values.values())
        query = sql.SQL("update {} set {}").format(_table(request.table), assignments)
        return query + _where(request.filters, params) + _returning(), params
    if isinstance(request, Delete):
        query = sql.SQL("delete from {}").format(_table(request.table))
        return query + _where(request.filters, params) + _returning(), params
    raise InvalidRequestError(f"unsupported request {request!r}")  # pragma: no cover


def _compile_insert(request: Insert) -> tuple[sql.Composed, list[Any]]:
    if not request.rows:
        raise InvalidRequestError("nothing to insert")
    columns = list(request.rows[0])
    if any(list(row) != columns for row in request.rows):
        raise InvalidRequestError("every inserted row must have the same columns")
    params: list[Any] = []
    values = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in columns)) for _ in request.rows
    )
    for row in request.rows:
        params.extend(_adapt(row[c]) for c in columns)
    query: sql.Composed = sql.SQL("insert into {} ({}) values {}").format(
        _table(request.table), sql.SQL(", ").join(sql.Identifier(c) for c in columns), values
    )
    if request.on_conflict:
        # Exactly PostgREST's merge-duplicates upsert: every sent column is assigned, the conflict
        # columns included, so column grants are checked the same way on both backends.
        query += sql.SQL(" on conflict ({}) do update set ").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in request.on_conflict)
        )
        query += sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in columns)
    return query + _returning(), params
