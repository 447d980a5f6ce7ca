"""The command line, through Typer's CliRunner, against a real database."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from idea_expansion.cli import app
from idea_expansion.local import SupabaseProject, reset
from idea_expansion.local.maintenance import table_fingerprints

from .conftest import ROOT, use_cli_environment

FreshDatabase = Callable[..., str]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=ROOT)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def ok(*args: str, input: str | None = None) -> str:
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def new_user(url: str) -> str:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.test"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into public.users (email, name) values (%s, 'Cli User')", (email,))
    return email


def test_every_command_has_help_with_an_example() -> None:
    commands = [
        ["demo"],
        ["expand"],
        ["enqueue"],
        ["credits"],
        ["worker"],
        ["users", "add"],
        ["credentials", "set-github"],
        *[
            ["db", c]
            for c in (
                "reset",
                "migrate",
                "bootstrap",
                "status",
                "doctor",
                "reset-data",
                "complete-reset",
                "seed-admin",
                "backup",
                "restore",
                "stop",
                "check-ideas",
                "check-outputs",
                "check-join",
                "check-fk",
                "clear",
            )
        ],
        *[["admin", c] for c in ("grant-credits", "usage", "refund", "rotate-keys")],
        *[["report", c] for c in ("users", "top-users", "failed", "payments", "executions")],
        *[["ideas", c] for c in ("add", "list", "archive")],
        *[["outputs", c] for c in ("list", "show", "publish")],
    ]
    for command in commands:
        output = ok(*command, "--help")
        assert "Example: idea-expansion" in output, command


def test_demo_tells_the_whole_story_and_can_run_again(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    for _ in range(2):
        output = ok("demo", "--db-url", url, "--yes")
        for expected in (
            "blog post:",
            "thread (",
            "README.md",
            "stored at:",
            "out of credits",
            "No credits remaining",
            "payment receipt",
            "One more run, on a paid credit",
            "charges: 5 free, 1 paid",
        ):
            assert expected in output, expected
        assert "credits: 4 free, 0 paid" in output
        assert "credits: 0 free, 4 paid" in output


def test_doctor_passes_then_fails_after_a_policy_is_dropped(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project)
    checks = json.loads(run("db", "doctor", "--json", "--db-url", url).stdout)["checks"]
    ran = len([c for c in checks if c["status"] != "skip"])  # the count, not a number to keep in step
    output = ok("db", "doctor", "--db-url", url)
    assert f"all {ran} checks passed" in output
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('drop policy "Users can view their own ideas" on public.ideas')
    failed = run("db", "doctor", "--db-url", url)
    assert failed.exit_code == 1
    assert "ideas: Users can view their own ideas" in failed.output
    assert f"1 of {ran} checks failed: policies" in failed.output
    assert "Traceback" not in failed.output


def test_grant_credits_validates_confirms_and_grants_once(cli_db: str) -> None:
    email = new_user(cli_db)
    for credits, amount, message in (
        ("1.5", "5.00", "positive whole number"),
        ("5abc", "5", "positive whole number"),
        ("5", "5abc", "at most two decimals"),
        ("0", "5", "positive whole number"),
        ("5", "5.001", "at most two decimals"),
        ("5", "0.00", "positive amount"),
    ):
        refused = run("admin", "grant-credits", email, credits, amount, "BMC-BAD", "--db-url", cli_db, "--yes")
        assert refused.exit_code == 1
        assert message in refused.output
    no_reference = run("admin", "grant-credits", email, "5", "5.00", "--db-url", cli_db, "--yes")
    assert no_reference.exit_code == 2  # a payment without its reference cannot be told from its retry
    assert "reference" in no_reference.output.lower()
    declined = run("admin", "grant-credits", email, "5", "5.00", "BMC-CLI-1", "--db-url", cli_db, input="n\n")
    assert declined.exit_code == 1
    output = ok(
        "admin", "grant-credits", email, "5", "5.00", "BMC-CLI-1", "first coffee", "--db-url", cli_db, input="y\n"
    )
    for line in (
        "Step 1: Looking up user...",
        "✅ User found: Cli User",
        "Current Credits:   5",
        "Step 3: Creating payment receipt...",
        "✅ Verification successful",
        "Credits granted successfully!",
        "Previous Total:    5",
        "New Total:         10",
        "Reference:         BMC-CLI-1",
    ):
        assert line in output, line
    for same in ("BMC-CLI-1", " bmc-cli-1 "):  # the same payment, however it is typed
        again = ok("admin", "grant-credits", email, "5", "5.00", same, "--db-url", cli_db, "--yes")
        assert "was already granted" in again
        assert "Nothing granted: reference already used" in again
        assert "New Total:         10" in again
    unknown = run("admin", "grant-credits", "nobody@example.test", "5", "5", "BMC-X", "--db-url", cli_db, "--yes")
    assert unknown.exit_code == 1
    assert "no user with e-mail nobody@example.test" in unknown.output


def test_usage_and_refund_with_partial_take_back(cli_db: str) -> None:
    email = new_user(cli_db)
    granted = ok(
        "admin", "grant-credits", email, "3", "3.00", f"BMC-{uuid.uuid4().hex[:6]}", "--db-url", cli_db, "--yes"
    )
    receipt = re.search(r"Receipt ID:\s+(\S+)", granted)
    assert receipt is not None
    with psycopg.connect(cli_db, autocommit=True) as conn:  # two paid credits get spent
        conn.execute(
            "update public.usage_tracking set free_expansions_remaining = 0 "
            "where user_id = (select id from public.users where email = %s)",
            (email,),
        )
        for _ in range(2):
            conn.execute(
                "select public.consume_expansion_credit((select id from public.users where email = %s))", (email,)
            )
    usage = ok("admin", "usage", email, "--db-url", cli_db)
    assert "Paid remaining: 1" in usage
    assert "Payment history" in usage
    refunded = ok("admin", "refund", receipt.group(1), "--db-url", cli_db, "--yes", "--note", "chargeback")
    assert "1 of 3 paid credits removed; 0 paid left" in refunded
    assert "2 of the purchased credits had already been spent" in refunded
    twice = run("admin", "refund", receipt.group(1), "--db-url", cli_db, "--yes")
    assert twice.exit_code == 1
    assert "already refunded" in twice.output
    assert "not 'x'" in run("admin", "refund", "x", "--db-url", cli_db, "--yes").output


def test_everyday_commands(cli_db: str) -> None:
    email = new_user(cli_db)
    added = ok(
        "ideas",
        "add",
        "A library to parse dates",
        "-u",
        email,
        "-d",
        "Dates, everywhere.",
        "-b",
        "iso",
        "--db-url",
        cli_db,
    )
    idea_id = added.split()[1].rstrip(":")
    listed = json.loads(ok("ideas", "list", "-u", email, "--json", "--db-url", cli_db))
    assert [i["id"] for i in listed] == [idea_id]
    expanded = ok("expand", "--idea", idea_id, "--format", "twitter_thread", "--db-url", cli_db)
    assert "completed run" in expanded
    assert "1/" in expanded
    assert "credits left: 4 free, 0 paid" in expanded
    outputs = json.loads(ok("outputs", "list", "-u", email, "--json", "--db-url", cli_db))
    assert [o["format"] for o in outputs] == ["twitter_thread"]
    assert "thread (" in ok("outputs", "show", outputs[0]["id"], "--db-url", cli_db)
    second = ok("ideas", "add", "Another one", "-u", email, "--db-url", cli_db).split()[1].rstrip(":")
    assert "Archived" in ok("ideas", "archive", second, "--db-url", cli_db)
    assert "4 credits left (4 free, 0 paid); 1 used" in ok("credits", email, "--db-url", cli_db)
    csv = ok("ideas", "list", "-u", email, "--csv", "--db-url", cli_db).splitlines()
    assert csv[0] == "id,title,status,priority_score,created_at"
    assert len(csv) == 3
    no_user = run("expand", "--db-url", cli_db)
    assert no_user.exit_code == 1
    assert "say whose idea to expand" in no_user.output
    # blog posts are private unless --public
    for title, flags, public in [("Private by default", [], False), ("Public on request", ["--public"], True)]:
        ok("ideas", "add", title, "-u", email, "--db-url", cli_db)
        ok("expand", "-u", email, "-f", "blog_post", *flags, "--db-url", cli_db)
        with psycopg.connect(cli_db) as conn:
            row = conn.execute("select is_public from public.blog_posts where title = %s", (title,)).fetchone()
        assert row == (public,), title


def test_reports_as_table_json_and_csv(cli_db: str) -> None:
    email = new_user(cli_db)
    ok("admin", "grant-credits", email, "2", "2.50", f"BMC-{uuid.uuid4().hex[:6]}", "--db-url", cli_db, "--yes")
    ok("ideas", "add", "Report me", "-u", email, "--db-url", cli_db)
    ok("expand", "-u", email, "-f", "twitter_thread", "--db-url", cli_db)
    users = json.loads(ok("report", "users", "--json", "--db-url", cli_db))
    mine = next(u for u in users if u["email"] == email)
    assert (mine["ideas"], mine["outputs"], mine["free_remaining"], mine["paid_remaining"]) == (1, 1, 4, 2)
    summary = json.loads(ok("report", "payments", "--summary", "--json", "--db-url", cli_db))
    assert next(r for r in summary if r["email"] == email)["total_spent"] == "2.50"
    executions = ok("report", "executions", "--summary", "--csv", "--db-url", cli_db).splitlines()
    assert executions[0] == "email,total_executions,successful,partial,failed,total_tokens"
    assert f"{email},1,1,0,0,0" in executions
    for command in (["report", "top-users"], ["report", "failed"], ["report", "payments"], ["report", "executions"]):
        assert "─" in ok(*command, "--db-url", cli_db)


def test_helper_commands_for_a_user(cli_db: str) -> None:
    email = new_user(cli_db)
    ok("ideas", "add", "Helper idea", "-u", email, "--db-url", cli_db)
    ok("expand", "-u", email, "-f", "twitter_thread", "--db-url", cli_db)
    assert "Helper idea" in ok("db", "check-ideas", email, "--db-url", cli_db)
    assert "twitter_thread" in ok("db", "check-outputs", email, "--db-url", cli_db)
    assert "twitter_thread" in ok("db", "check-join", email, "--db-url", cli_db)
    assert "no orphaned rows" in ok("db", "check-fk", "--db-url", cli_db)
    assert "1 ideas and 1 runs" in ok("db", "clear", email, "--db-url", cli_db, "--yes")
    assert "(no rows)" in ok("db", "check-ideas", email, "--db-url", cli_db)


def test_backup_and_restore_round_trip(cli_db: str, fresh_database: FreshDatabase, tmp_path: Path) -> None:
    email = new_user(cli_db)
    ok("ideas", "add", "Back me up", "-u", email, "--db-url", cli_db)
    ok("expand", "-u", email, "-f", "blog_post", "--db-url", cli_db)
    ok("admin", "grant-credits", email, "1", "1.00", f"BMC-{uuid.uuid4().hex[:6]}", "--db-url", cli_db, "--yes")
    with psycopg.connect(cli_db, autocommit=True) as conn:
        conn.execute(
            "insert into public.credentials (user_id, provider, encrypted_value) "
            "select id, 'openai', '{\"v\":2}' from public.users where email = %s",
            (email,),
        )
        conn.execute(
            "insert into auth.users (id, email, raw_user_meta_data) values (gen_random_uuid(), %s, '{}')",
            (f"auth-{uuid.uuid4().hex[:6]}@example.test",),
        )
    with psycopg.connect(cli_db) as conn:
        before = table_fingerprints(conn)
    file = tmp_path / "backup.dump"
    ok("db", "backup", str(file), "--db-url", cli_db)
    empty = fresh_database()
    restored = ok("db", "restore", str(file), "--db-url", empty, "--yes")
    with psycopg.connect(empty) as conn:
        after = table_fingerprints(conn)
    rows = sum(count for count, _ in before.values())
    print(f"\nbackup round trip: {len(before)} tables, {rows} rows, {file.stat().st_size} bytes, checksums equal")
    assert after == before
    assert f"Restored {rows} rows" in restored
    assert all(count > 0 for count, _ in before.values()), before


def test_clear_refuses_while_runs_hold_credits(cli_db: str) -> None:
    email = new_user(cli_db)
    ok("ideas", "add", "In flight", "-u", email, "--db-url", cli_db)
    with psycopg.connect(cli_db, autocommit=True) as conn:
        conn.execute(
            "select public.start_expansion((select id from public.users where email = %s), null, null, null, true)",
            (email,),
        )
    refused = run("db", "clear", email, "--db-url", cli_db, "--yes")
    assert refused.exit_code == 1
    assert "1 run(s) queued or running" in refused.output
    assert "In flight" in ok("db", "check-ideas", email, "--db-url", cli_db)


def test_restore_reads_the_file_before_touching_the_database(cli_db: str, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-backup.dump"
    garbage.write_bytes(b"this is not a pg_dump archive")
    with psycopg.connect(cli_db) as conn:
        before = table_fingerprints(conn)
    failed = run("db", "restore", str(garbage), "--db-url", cli_db, "--yes")
    assert failed.exit_code == 1
    assert "reading the backup failed" in failed.output
    with psycopg.connect(cli_db) as conn:
        assert table_fingerprints(conn) == before


def test_reset_data_complete_reset_migrate_and_seed_admin(
    fresh_database: FreshDatabase, project: SupabaseProject
) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project)
    email = new_user(url)
    ok("ideas", "add", "Soon gone", "-u", email, "--db-url", url)
    output = ok("db", "reset-data", "--db-url", url, "--yes")
    assert "admin@example.com │    5 │   95 │             100" in output
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from public.users").fetchone() == (1,)
        assert conn.execute("select count(*) from public.ideas").fetchone() == (0,)
    assert "Everything the migrations created is gone" in ok("db", "complete-reset", "--db-url", url, "--yes")
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('public.users')").fetchone() == (None,)
        assert conn.execute("select count(*) from storage.buckets where id = 'images'").fetchone() == (0,)
        assert conn.execute("select to_regnamespace('private')").fetchone() == (None,)
    migrations = len(list(project.migrations_dir.glob("*.sql")))
    assert f"{migrations} migration(s) applied" in ok("db", "migrate", "--db-url", url)
    assert "Already up to date." in ok("db", "migrate", "--db-url", url)
    assert "ops@example.com: 1 free + 9 paid = 10 credits" in ok(
        "db", "seed-admin", "--db-url", url, "--email", "OPS@example.com", "--free", "1", "--paid", "9"
    )


def test_errors_are_one_line_unless_debug(cli_db: str) -> None:
    plain = run("credits", "nobody@example.test", "--db-url", cli_db)
    assert plain.exit_code == 1
    assert plain.output.strip().startswith("error:")
    assert "Traceback" not in plain.output
    debug = run("--debug", "credits", "nobody@example.test", "--db-url", cli_db)
    assert debug.exit_code == 1
    assert "Traceback" in debug.output
