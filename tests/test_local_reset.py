"""The local reset: bootstrap, migration history in the Supabase CLI's table, seed, and the CLI command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from idea_expansion import ConfigurationError, DatabaseSetupError
from idea_expansion.cli import app
from idea_expansion.local import (
    SupabaseProject,
    bootstrap,
    database_kind,
    find_project,
    migrate,
    migration_status,
    reset,
    run_seed,
)
from idea_expansion.local.compat import read_sql

FreshDatabase = Callable[..., str]


def test_reset_records_every_migration_like_the_cli(database_url: str, project: SupabaseProject) -> None:
    with psycopg.connect(database_url) as conn:
        history = conn.execute(
            "select version, name, cardinality(statements) from supabase_migrations.schema_migrations order by version"
        ).fetchall()
        seeds = conn.execute("select path from supabase_migrations.seed_files").fetchall()
    files = project.migrations()
    assert [(v, n) for v, n, _ in history] == [(m.version, m.name) for m in files]
    assert all(count > 0 for _, _, count in history)
    assert seeds == [("supabase/seed.sql",)]


def test_reset_twice_and_migrate_when_current(fresh_database: FreshDatabase, project: SupabaseProject) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        first = reset(conn, project)
        conn.execute("insert into public.users (email) values ('leftover@example.test')")
        second = reset(conn, project)
        assert first.bootstrapped
        assert second.bootstrapped
        assert len(first.applied) == len(second.applied) == len(project.migrations())
        assert conn.execute("select email from public.users").fetchall() == [("admin@example.com",)]
        assert migrate(conn, project) == []
        assert migration_status(conn, project).pending == []
        assert database_kind(conn) == "compat"


def test_reset_drops_dependent_views_and_serial_columns(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    """Objects a cascade removes first (owned sequences, dependent views) must not break the drop."""
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project, seed=False)
        conn.execute("create table public.scratch (id serial primary key, at tstzrange)")
        conn.execute("create view public.scratch_v1 as select id from public.scratch")
        conn.execute("create view public.scratch_v2 as select id from public.scratch_v1")
        conn.execute("create type public.mood as enum ('ok')")
        reset(conn, project, seed=False)
        left = conn.execute(
            "select count(*) from pg_class where relnamespace = 'public'::regnamespace and relname like 'scratch%'"
        ).fetchone()
        assert left == (0,)


def test_seed_is_rerunnable_and_leaves_the_admin_alone(fresh_database: FreshDatabase, project: SupabaseProject) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project)
        query = (
            "select u.id, t.free_expansions_remaining, t.paid_credits_remaining, t.total_expansions_used "
            "from public.users u join public.usage_tracking t on t.user_id = u.id"
        )
        seeded = conn.execute(query).fetchall()
        assert [row[1:] for row in seeded] == [(5, 95, 0)]
        assert run_seed(conn, project)
        assert conn.execute(query).fetchall() == seeded


def test_pending_migrations_are_applied_in_order(
    fresh_database: FreshDatabase, project: SupabaseProject, tmp_path: Path
) -> None:
    """A database reset with an older checkout (one migration fewer) catches up with `migrate`."""
    older = tmp_path / "supabase"
    (older / "migrations").mkdir(parents=True)
    *earlier, last = project.migrations()
    for migration in earlier:
        (older / "migrations" / migration.path.name).write_text(migration.sql)
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, SupabaseProject(older), seed=False)
        status = migration_status(conn, project)
        assert [m.version for m in status.pending] == [last.version]
        assert [m.version for m in migrate(conn, project)] == [last.version]
        assert migration_status(conn, project).pending == []
        assert migration_status(conn, SupabaseProject(older)).unknown == [last.version]


def test_bootstrap_is_idempotent(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        assert database_kind(conn) == "plain"
        bootstrap(conn)
        bootstrap(conn)
        assert database_kind(conn) == "compat"
        roles = {
            r[0]
            for r in conn.execute(
                "select rolname from pg_roles "
                "where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')"
            )
        }
        assert roles == {"anon", "authenticated", "service_role", "authenticator"}
        assert conn.execute("select rolbypassrls from pg_roles where rolname = 'service_role'").fetchone() == (True,)


def test_bootstrap_refuses_a_real_supabase_database(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        # What a Supabase database looks like to us: an auth schema we did not create.
        conn.execute("create schema auth")
        conn.execute("create table auth.schema_migrations (version text primary key)")
        assert database_kind(conn) == "supabase"
        with pytest.raises(DatabaseSetupError, match="Supabase database"):
            bootstrap(conn)
        # the SQL guards itself too, for anyone running the file by hand
        with pytest.raises(psycopg.Error) as guarded:
            conn.execute(read_sql("supabase_compat.sql"))
        assert guarded.value.sqlstate == "55000"
        assert conn.execute("select count(*) from pg_namespace where nspname = 'storage'").fetchone() == (0,)


def test_badly_named_migration_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "create_things.sql").write_text("select 1;")
    with pytest.raises(ConfigurationError, match=r"create_things\.sql"):
        find_project(tmp_path).migrations()


def test_missing_project_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no Supabase project"):
        find_project(tmp_path / "nowhere")


def test_cli_reset_status_and_confirmation(fresh_database: FreshDatabase, project: SupabaseProject) -> None:
    url = fresh_database()
    runner = CliRunner()
    args = ["--db-url", url, "--project-dir", str(project.root)]

    declined = runner.invoke(app, ["db", "reset", *args], input="n\n")
    assert declined.exit_code == 1
    with psycopg.connect(url) as conn:
        assert database_kind(conn) == "plain"

    result = runner.invoke(app, ["db", "reset", "--yes", *args])
    assert result.exit_code == 0, result.output
    assert f"{len(project.migrations())} migrations applied" in result.output
    assert "admin@example.com" in result.output
    assert "100" in result.output

    status = runner.invoke(app, ["db", "status", *args])
    assert status.exit_code == 0, status.output
    assert status.output.count("applied") == len(project.migrations())


def test_cli_reports_unreachable_database_in_one_line() -> None:
    result = CliRunner().invoke(app, ["db", "status", "--db-url", "postgresql://nobody@127.0.0.1:1/none"])
    assert result.exit_code == 1
    assert "cannot connect to the database" in result.output
    assert "Traceback" not in result.output


def test_cli_reset_without_seed(fresh_database: FreshDatabase, project: SupabaseProject) -> None:
    url = fresh_database()
    result = CliRunner().invoke(
        app, ["db", "reset", "--yes", "--no-seed", "--db-url", url, "--project-dir", str(project.root)]
    )
    assert result.exit_code == 0, result.output
    assert ", seeded" not in result.output
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from public.users").fetchone() == (0,)
