"""Live progress and the database doctor: the `supabase_realtime` publication migration on databases with
and without the publication, and `db doctor` / `db status` (with --json) on Supabase-like, plain, empty and
half-migrated databases. Each test has private databases on the real test server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from idea_expansion.cli import app
from idea_expansion.local import SupabaseProject, database_kind, migrate, migration_status, reset

from .conftest import ROOT, project_before, use_cli_environment

FreshDatabase = Callable[..., str]
MIGRATION = "20260101002700_realtime_publication.sql"
MEMBERS = (
    "select tablename from pg_publication_tables "
    "where pubname = 'supabase_realtime' and schemaname = 'public' and tablename in ('executions', 'outputs') "
    "order by tablename"
)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=ROOT)


def members(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(MEMBERS)]


def migration_sql(project: SupabaseProject) -> str:
    return (project.migrations_dir / MIGRATION).read_text(encoding="utf-8")


def doctor_json(url: str, project: SupabaseProject) -> tuple[Result, dict[str, Any], dict[str, dict[str, str]]]:
    """`db doctor --json`: the result, the document (stdout is JSON and nothing else) and its checks by name."""
    result = CliRunner().invoke(app, ["db", "doctor", "--json", "--db-url", url, "--project-dir", str(project.root)])
    document = json.loads(result.stdout)
    return result, document, {c["name"]: c for c in document["checks"]}


def doctor_text(url: str, project: SupabaseProject) -> Result:
    """`db doctor` as a person runs it: the table, then one summary line."""
    return CliRunner().invoke(app, ["db", "doctor", "--db-url", url, "--project-dir", str(project.root)])


def ran_and_failed(document: dict[str, Any]) -> tuple[int, int]:
    """How many checks of a `db doctor --json` document ran (were not skipped), and how many failed."""
    statuses = [c["status"] for c in document["checks"]]
    return len(statuses) - statuses.count("skip"), statuses.count("fail")


def make_supabase_identified(conn: psycopg.Connection[Any]) -> None:
    """What a real Supabase database looks like to `database_kind`: an auth schema we did not create."""
    conn.execute("comment on schema auth is 'Supabase auth'")
    assert database_kind(conn) == "supabase"


def test_migration_applies_without_the_publication_and_again(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project, seed=False)  # plain PostgreSQL: bootstrapped, no supabase_realtime publication
        assert conn.execute("select count(*) from pg_publication where pubname = 'supabase_realtime'").fetchone() == (
            0,
        )
        assert MIGRATION.split("_")[0] in migration_status(conn, project).applied
        conn.execute(migration_sql(project))  # applied twice: still nothing to do, no error
        assert conn.execute("select count(*) from pg_publication").fetchone() == (0,)


def test_publication_made_before_migrating_gets_both_tables_and_reapplying_is_a_no_op(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")  # as Supabase makes it: empty, every action
        reset(conn, project, seed=False)
        assert members(conn) == ["executions", "outputs"]
        conn.execute(migration_sql(project))  # a second application adds nothing and does not fail
        assert members(conn) == ["executions", "outputs"]
        # `db reset` drops the tables (taking them out of the publication) and the migration puts them back
        reset(conn, project, seed=False)
        assert members(conn) == ["executions", "outputs"]
        # one table already added by hand: only the other is added
        conn.execute("alter publication supabase_realtime drop table public.outputs")
        conn.execute(migration_sql(project))
        assert members(conn) == ["executions", "outputs"]
        # no table but ours was put in it
        assert conn.execute(
            "select count(*) from pg_publication_tables where pubname = 'supabase_realtime'"
        ).fetchone() == (2,)


def test_a_publication_for_all_tables_needs_no_add(fresh_database: FreshDatabase, project: SupabaseProject) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime for all tables")
        reset(conn, project, seed=False)  # `alter publication ... add table` would fail on it
        conn.execute(migration_sql(project))
        assert members(conn) == ["executions", "outputs"]
        assert conn.execute("select count(*) from pg_publication_rel").fetchone() == (0,)
    result, _, checks = doctor_json(url, project)
    assert result.exit_code == 0, result.output
    assert checks["realtime publication"]["status"] == "pass"
    assert "all tables" in checks["realtime publication"]["detail"]


def test_doctor_passes_the_publication_where_supabase_has_it(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
        reset(conn, project, seed=False)
        make_supabase_identified(conn)
    result, document, checks = doctor_json(url, project)
    assert result.exit_code == 0, result.output
    assert document["ok"] is True
    assert checks["realtime publication"] == {
        "name": "realtime publication",
        "status": "pass",
        "detail": "public.executions and public.outputs are in supabase_realtime",
        "fix": "",
    }
    assert {c["status"] for c in document["checks"]} == {"pass"}
    print("supabase-like:", json.dumps(checks["realtime publication"]))

    text = doctor_text(url, project)
    assert text.exit_code == 0, text.output
    assert f"all {len(document['checks'])} checks passed\n" in text.output  # none skipped


def test_doctor_skips_the_publication_on_plain_postgres(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project, seed=False)
    result, document, checks = doctor_json(url, project)
    assert result.exit_code == 0, result.output
    assert document["ok"] is True
    realtime = checks["realtime publication"]
    assert realtime["status"] == "skip"
    assert realtime["detail"].startswith("not a Supabase database: no supabase_realtime publication")
    assert [c["name"] for c in document["checks"] if c["status"] != "pass"] == ["realtime publication"]
    print("plain:", json.dumps(realtime))

    text = doctor_text(url, project)
    assert text.exit_code == 0, text.output
    assert f"all {len(document['checks']) - 1} checks passed (1 skipped)" in text.output
    assert "skipped" in text.output


def test_doctor_fails_a_supabase_database_missing_the_tables_in_its_publication(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project, seed=False)
        make_supabase_identified(conn)
    # Supabase without its publication at all (someone dropped it)
    result, document, checks = doctor_json(url, project)
    assert result.exit_code == 1
    assert document["ok"] is False
    assert checks["realtime publication"]["status"] == "fail"
    assert "has no supabase_realtime publication" in checks["realtime publication"]["detail"]
    ran, _ = ran_and_failed(document)
    assert f"1 of {ran} checks failed: realtime publication" in result.stderr

    # the publication made after the migrations ran: neither table is in it
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
    result, document, checks = doctor_json(url, project)
    assert result.exit_code == 1
    realtime = checks["realtime publication"]
    assert realtime["status"] == "fail"
    assert realtime["detail"] == (
        "public.executions is not in supabase_realtime; public.outputs is not in supabase_realtime"
    )
    assert "alter publication supabase_realtime add table" in realtime["fix"]
    print("supabase, missing:", json.dumps(realtime))

    # one of the two is still a failure; both, a pass
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("alter publication supabase_realtime add table public.executions")
    result, _, checks = doctor_json(url, project)
    assert result.exit_code == 1
    assert checks["realtime publication"]["detail"] == "public.outputs is not in supabase_realtime"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("alter publication supabase_realtime add table public.outputs")
    result, _, checks = doctor_json(url, project)
    assert result.exit_code == 0, result.output
    assert checks["realtime publication"]["status"] == "pass"

    # a publication that does not send updates would never show progress
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("alter publication supabase_realtime set (publish = 'insert, delete')")
    result, _, checks = doctor_json(url, project)
    assert result.exit_code == 1
    assert checks["realtime publication"]["detail"] == "supabase_realtime does not publish updates"


def test_doctor_fails_an_empty_database(fresh_database: FreshDatabase, project: SupabaseProject) -> None:
    url = fresh_database()  # nothing applied, not even the bootstrap
    result, document, checks = doctor_json(url, project)
    assert result.exit_code == 1
    assert document["ok"] is False
    # tables that do not exist have no row-level security: this check used to pass here
    assert checks["row-level security"]["status"] == "fail"
    assert checks["row-level security"]["detail"].startswith("no such table to protect: users, ideas, ")
    assert checks["migration history"]["detail"].startswith("no migrations applied: the database is empty (")
    assert checks["connection"]["status"] == "pass"
    assert checks["realtime publication"]["status"] == "skip"
    assert {c["status"] for n, c in checks.items() if n not in ("connection", "realtime publication")} == {"fail"}
    assert "no migrations applied" in result.stderr
    assert "run idea-expansion db migrate" in result.stderr
    print("empty:", result.stderr.strip())

    text = doctor_text(url, project)
    assert text.exit_code == 1
    ran, failed = ran_and_failed(document)
    assert (ran, failed) == (len(document["checks"]) - 1, len(document["checks"]) - 2)  # all but two fail; one skipped
    assert f"{failed} of {ran} checks failed" in text.output
    assert "Traceback" not in text.output


def test_doctor_and_status_on_a_half_migrated_database(
    fresh_database: FreshDatabase, project: SupabaseProject, tmp_path: Path
) -> None:
    url = fresh_database()
    older = project_before(project, "20260101001400", tmp_path)  # up to the storage bucket, no pipeline yet
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, older, seed=False)
    shipped = len(project.migrations())
    applied = len(older.migrations())
    result, document, checks = doctor_json(url, project)
    assert result.exit_code == 1
    assert document["ok"] is False
    history = checks["migration history"]
    assert history["status"] == "fail"
    assert history["detail"].startswith(f"half-migrated: {applied} of {shipped} migrations applied; pending: ")
    assert checks["credit and pipeline functions"]["status"] == "fail"  # the pipeline's functions are not there
    assert f"half-migrated: {applied} of {shipped} migrations applied: run idea-expansion db migrate" in result.stderr
    print("half-migrated:", result.stderr.strip())

    status = CliRunner().invoke(app, ["db", "status", "--json", "--db-url", url, "--project-dir", str(project.root)])
    assert status.exit_code == 0, status.output
    listing = json.loads(status.stdout)
    assert (listing["database_kind"], listing["applied"], listing["pending"], listing["unknown"]) == (
        "compat",
        applied,
        shipped - applied,
        0,
    )
    states = {m["version"]: m["state"] for m in listing["migrations"]}
    assert list(states) == [m.version for m in project.migrations()]
    assert [states[m.version] for m in older.migrations()] == ["applied"] * applied
    assert states[MIGRATION.split("_")[0]] == "pending"

    # migrated the rest of the way, every check passes (the publication skipped: not a Supabase database)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, project)
    result, document, _ = doctor_json(url, project)
    assert result.exit_code == 0, result.output
    assert document["ok"] is True
    status = CliRunner().invoke(app, ["db", "status", "--json", "--db-url", url, "--project-dir", str(project.root)])
    assert json.loads(status.stdout)["pending"] == 0
