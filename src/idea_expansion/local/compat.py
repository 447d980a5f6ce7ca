"""The Supabase-compatibility bootstrap for plain PostgreSQL servers."""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from .._exceptions import DatabaseSetupError

__all__ = ["bootstrap", "database_kind", "read_sql"]


def read_sql(name: str) -> str:
    """The text of one of the SQL files shipped in `idea_expansion/local/sql`."""
    return resources.files(__package__).joinpath("sql", name).read_text(encoding="utf-8")


def database_kind(conn: psycopg.Connection[Any]) -> str:
    """`"plain"` (no auth schema), `"compat"` (bootstrapped by us) or `"supabase"` (a real Supabase database)."""
    # A tuple cursor, whatever row factory the connection uses (the SDK's pool returns dicts).
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute("select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = 'auth'")
        .fetchone()
    )
    if row is None:
        return "plain"
    comment = row[0] or ""
    return "compat" if comment.startswith("idea-expansion supabase-compat") else "supabase"


def bootstrap(conn: psycopg.Connection[Any]) -> None:
    """Create the roles, schemas and functions Supabase provides, on a plain PostgreSQL database.

    Idempotent. Raises `DatabaseSetupError` on a real Supabase database (which already has all of
    this) and when the connection is not a superuser.
    """
    if database_kind(conn) == "supabase":
        raise DatabaseSetupError(
            "refusing to bootstrap: this is a Supabase database (its auth schema was not made by idea-expansion)"
        )
    try:
        with conn.transaction():
            conn.execute(read_sql("supabase_compat.sql"))
    except psycopg.Error as exc:
        raise DatabaseSetupError(f"Supabase-compatibility bootstrap failed: {exc}") from exc
