"""Apply supabase/migrations the way the Supabase CLI does, recording them in the CLI's own table.

`reset` = `supabase db reset --db-url`: (bootstrap on plain PostgreSQL,) drop what migrations made,
apply every migration in order, run the seed. `migrate` = `supabase migration up`. Both tools read and
write `supabase_migrations.schema_migrations (version, name, statements)`, so they agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .._exceptions import DatabaseSetupError
from .compat import bootstrap, database_kind, read_sql
from .project import MigrationFile, SupabaseProject
from .sqlsplit import split_statements

__all__ = ["MigrationStatus", "ResetResult", "migrate", "migration_status", "reset"]

_HISTORY_DDL = (
    "create schema if not exists supabase_migrations",
    "create table if not exists supabase_migrations.schema_migrations (version text not null primary key)",
    "alter table supabase_migrations.schema_migrations add column if not exists statements text[]",
    "alter table supabase_migrations.schema_migrations add column if not exists name text",
    "create table if not exists supabase_migrations.seed_files (path text not null primary key, hash text not null)",
)

Progress = Callable[[str], None]


@dataclass
class ResetResult:
    """What a reset did."""

    bootstrapped: bool
    applied: list[MigrationFile] = field(default_factory=list)
    seeded: bool = False


@dataclass
class MigrationStatus:
    """Migration files against the history table."""

    applied: list[str]
    pending: list[MigrationFile]
    unknown: list[str]
    """Versions recorded in the database with no file here (applied from another checkout)."""


def _noop(_: str) -> None:
    return None


def reset(
    conn: psycopg.Connection[Any],
    project: SupabaseProject,
    *,
    seed: bool = True,
    progress: Progress = _noop,
) -> ResetResult:
    """Reset the database to exactly what the migrations (and seed) produce. Destroys all data.

    `conn` must be an autocommit connection as a superuser on plain PostgreSQL, or as `postgres` on
    Supabase. Each migration runs in its own transaction, as the CLI runs them.
    """
    kind = database_kind(conn)
    bootstrapped = False
    if kind != "supabase":
        progress("Bootstrapping Supabase roles and schemas...")
        bootstrap(conn)
        bootstrapped = True
    progress("Dropping user objects...")
    _execute(conn, read_sql("drop_user_objects.sql"), what="dropping user objects")
    result = ResetResult(bootstrapped=bootstrapped)
    result.applied = migrate(conn, project, progress=progress)
    if seed:
        result.seeded = run_seed(conn, project, progress=progress)
    return result


def migrate(
    conn: psycopg.Connection[Any], project: SupabaseProject, *, progress: Progress = _noop
) -> list[MigrationFile]:
    """Apply the migrations not yet recorded in the history table, in order. Returns those applied."""
    _ensure_history(conn)
    status = migration_status(conn, project)
    for migration in status.pending:
        progress(f"Applying migration {migration.path.name}...")
        statements = split_statements(migration.sql)
        with conn.transaction():
            for statement in statements:
                _execute(conn, statement, what=f"migration {migration.path.name}")
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements) values (%s, %s, %s)",
                (migration.version, migration.name, statements),
            )
    return status.pending


def migration_status(conn: psycopg.Connection[Any], project: SupabaseProject) -> MigrationStatus:
    """Which migration files are applied, which are pending, and which recorded versions have no file."""
    exists = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()
    applied: list[str] = []
    if exists and exists[0]:
        applied = [
            row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations order by version")
        ]
    files = project.migrations()
    known = {m.version for m in files}
    done = set(applied)
    return MigrationStatus(
        applied=[v for v in applied if v in known],
        pending=[m for m in files if m.version not in done],
        unknown=[v for v in applied if v not in known],
    )


def run_seed(conn: psycopg.Connection[Any], project: SupabaseProject, *, progress: Progress = _noop) -> bool:
    """Run seed.sql (if present) in one transaction and record its hash like the CLI. False if absent."""
    if not project.seed_path.is_file():
        return False
    progress(f"Seeding data from {project.seed_path.name}...")
    text = project.seed_path.read_text(encoding="utf-8")
    _ensure_history(conn)
    with conn.transaction():
        for statement in split_statements(text):
            _execute(conn, statement, what="seed.sql")
        conn.execute(
            "insert into supabase_migrations.seed_files (path, hash) values (%s, %s) "
            "on conflict (path) do update set hash = excluded.hash",
            ("supabase/seed.sql", hashlib.sha256(text.encode()).hexdigest()),
        )
    return True


def _ensure_history(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        for ddl in _HISTORY_DDL:
            conn.execute(ddl)


def _execute(conn: psycopg.Connection[Any], statement: str, *, what: str) -> None:
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        diag = exc.diag
        code_lines = [
            line for line in statement.strip().splitlines() if line.strip() and not line.lstrip().startswith("--")
        ]
        first_line = code_lines[0].strip() if code_lines else ""
        raise DatabaseSetupError(
            f"{what} failed at `{first_line[:80]}`: {diag.message_primary or exc}"
            + (f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else "")
        ) from exc
