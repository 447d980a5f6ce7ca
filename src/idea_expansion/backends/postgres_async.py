"""AsyncPostgresBackend: `PostgresBackend` for asyncio, over psycopg's `AsyncConnectionPool`.

The same statements (compiled by the sync module), the same one-round-trip transaction per call (BEGIN,
role and claims, the statement, COMMIT in one pipeline), the same errors. Only the waiting differs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import psycopg
from psycopg.abc import Params, QueryNoTemplate
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .._exceptions import APIConnectionError
from ._base import Request, Rpc, Scope
from ._connect import check_database_url, connect_once_async, with_connect_timeout
from .postgres import (
    BEGIN,
    COMMIT,
    OPEN_TRANSACTION,
    REQUEST_CONTEXT,
    ROWS,
    compile_rpc,
    compile_statement,
    configure_connection,
    connection_arguments,
    rpc_result,
    translated_error,
    unreadable_result,
)

__all__ = ["AsyncPostgresBackend"]

AsyncConnection = psycopg.AsyncConnection[dict[str, Any]]


async def _configure(conn: AsyncConnection) -> None:
    configure_connection(conn)


class AsyncPostgresBackend:
    """Runs requests on an async psycopg pool, one PostgREST-style transaction per call in one round trip.

    The pool opens at the first request (or `open()`, which `async with AsyncIdeaExpansion(...)` calls):
    an event loop is needed to open it, and building a client needs none."""

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
        self._timeout = timeout
        check_database_url(database_url)  # a malformed URL is a ConfigurationError, at once
        self._connect_kwargs = with_connect_timeout(
            database_url, connection_arguments(database_url, statement_timeout_ms)
        )
        self._pool = self._new_pool()
        self._opened = False
        self._closed = False
        self._opening: asyncio.Lock | None = None

    def _new_pool(self) -> AsyncConnectionPool[AsyncConnection]:
        arguments = self._arguments
        return AsyncConnectionPool(
            arguments["database_url"],
            connection_class=cast("type[AsyncConnection]", psycopg.AsyncConnection),
            min_size=arguments["min_size"],
            max_size=arguments["max_size"],
            timeout=arguments["timeout"],
            kwargs=self._connect_kwargs,
            configure=_configure,
            open=False,
        )

    def rebuild_arguments(self) -> dict[str, Any]:
        """The arguments that build an equal backend (sync or async): the sync twin is made from them."""
        return dict(self._arguments)

    async def open(self) -> None:
        """Open the pool and wait for its first connection. Raises `APIConnectionError` within seconds when
        the database cannot be reached (and leaves the pool closed, so a later call tries again)."""
        if self._opened:
            return
        if self._closed:
            raise APIConnectionError("this client is closed")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._opened:
                return
            # One plain connection first, as the sync backend does: the reason, at once, and no pool retries.
            await connect_once_async(self._arguments["database_url"], self._connect_kwargs)
            try:
                await self._pool.open(wait=True, timeout=self._timeout)
            except PoolTimeout as exc:
                await self._pool.close()
                self._pool = self._new_pool()  # a closed pool never opens again: the next call starts afresh
                raise APIConnectionError(f"cannot connect to the database within {self._timeout:.0f}s") from exc
            self._opened = True

    async def close(self) -> None:
        self._closed = True
        await self._pool.close()

    async def query(self, statement: QueryNoTemplate, params: Params | None, scope: Scope) -> list[dict[str, Any]]:
        """Run one statement as `scope`, PostgREST-style, in one round trip (see `PostgresBackend.query`)."""
        context = (scope.role, json.dumps(scope.claims()))
        async with self._connection() as conn:
            failure: psycopg.Error | None = None
            try:
                async with conn.pipeline():
                    try:
                        await conn.execute(BEGIN)
                        await conn.execute(REQUEST_CONTEXT, context)
                        cursor = await conn.execute(statement, params)
                        await conn.execute(COMMIT)
                    except psycopg.Error as exc:
                        failure = exc
            except psycopg.Error as exc:
                failure = failure or exc
            except BaseException:
                await _end_transaction(conn)
                raise
            if failure is not None:
                await _end_transaction(conn)
                raise failure
            result = cursor.pgresult
            if result is None or result.status != ROWS:
                return []
            try:
                return await cursor.fetchall()
            except psycopg.DataError as exc:
                raise unreadable_result(exc) from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        await self.open()
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout, UnicodeEncodeError) as exc:
            raise translated_error(exc) from exc

    async def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        query, params = compile_statement(request, scope)
        return await self.query(query, params, scope)

    async def rpc(self, request: Rpc, scope: Scope) -> Any:
        query, params = compile_rpc(request)
        return rpc_result(request, await self.query(query, params, scope))


async def _end_transaction(conn: AsyncConnection) -> None:
    """Roll back what a failed request left open (see the sync backend's `_end_transaction`)."""
    if conn.broken or conn.pgconn.transaction_status not in OPEN_TRANSACTION:
        return
    with suppress(psycopg.Error):
        await conn.rollback()
