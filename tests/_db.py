"""Run SQL the way PostgREST runs a request: one transaction, the role and JWT claims set exactly as the
SDK's Postgres backend sets them (`set_request_context`), the statement, then commit (or roll back)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from idea_expansion.backends._base import Scope
from idea_expansion.backends.postgres import set_request_context

Conn = psycopg.Connection[Any]


class Db:
    """A test database with PostgREST-style request helpers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = ConnectionPool(url, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def request(
        self,
        role: str,
        user_id: uuid.UUID | None = None,
        *,
        commit: bool = True,
        setup: str | None = None,
    ) -> Iterator[Conn]:
        """One request as `role`. `setup` runs first as the superuser, inside the same transaction."""
        with self.pool.connection() as conn, conn.transaction(force_rollback=not commit):
            if setup:
                conn.execute(setup)
            apply_request_context(conn, role, user_id)
            yield conn

    def as_user(self, user_id: uuid.UUID, **kw: Any) -> Any:
        return self.request("authenticated", user_id, **kw)

    def as_anon(self, **kw: Any) -> Any:
        return self.request("anon", **kw)

    def as_service(self, **kw: Any) -> Any:
        return self.request("service_role", **kw)

    @contextmanager
    def counting_calls(self) -> Iterator[tuple[Conn, Callable[[], Counter[str]]]]:
        """A service-role request, and the PL/pgSQL functions (`schema.name`) it has called so far."""
        # The view shows the backend's counts not yet flushed to the shared statistics, which may include
        # an earlier transaction's: the difference since the request began is this request's alone.
        counts = "select schemaname || '.' || funcname, calls from pg_stat_xact_user_functions"
        with self.request("service_role", setup="set local track_functions = 'pl'") as conn:
            before = Counter({name: int(calls) for name, calls in conn.execute(counts)})
            yield conn, lambda: Counter({name: int(calls) for name, calls in conn.execute(counts)}) - before

    @contextmanager
    def admin(self) -> Iterator[Conn]:
        """The superuser, in one committed transaction (test setup and inspection only)."""
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def scalar(self, query: str, params: Any = None) -> Any:
        with self.admin() as conn:
            row = conn.execute(query, params).fetchone()
            return None if row is None else row[0]

    def create_user(self, email: str | None = None, **usage: int) -> uuid.UUID:
        """A new user (through the service role, so the usage trigger runs as it would in production)."""
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.test"
        with self.as_service() as conn:
            row = conn.execute("insert into public.users (email) values (%s) returning id", (email,)).fetchone()
            assert row is not None
            user_id: uuid.UUID = row[0]
            if usage:
                assignments = sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in usage.items()
                )
                conn.execute(
                    sql.SQL("update public.usage_tracking set {} where user_id = %s").format(assignments),
                    (user_id,),
                )
        return user_id

    def usage(self, user_id: uuid.UUID) -> dict[str, Any]:
        with self.admin() as conn:
            cur = conn.execute("select * from public.usage_tracking where user_id = %s", (user_id,))
            row = cur.fetchone()
            assert row is not None, f"no usage row for {user_id}"
            names = [d.name for d in cur.description or []]
            return dict(zip(names, row, strict=True))


def apply_request_context(conn: Conn, role: str, user_id: uuid.UUID | None) -> None:
    """The request context for `role` (also roles PostgREST never uses, like supabase_auth_admin)."""
    set_request_context(conn, Scope(role, user_id))  # type: ignore[arg-type]
