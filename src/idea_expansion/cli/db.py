"""`idea-expansion db ...`: reset, migrate, inspect, repair, back up and restore the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from ..local import bootstrap, database_kind, find_project, migrate, migration_status, reset, stop_embedded
from ..local.maintenance import (
    APP_TABLES,
    Check,
    backup,
    complete_reset,
    doctor,
    foreign_key_report,
    reset_data,
    restore,
    table_fingerprints,
)
from ._common import (
    DB_URL_HELP,
    JsonOption,
    command_errors,
    connect,
    console,
    database_url,
    emit,
    fail,
    literal,
    open_client,
    printable,
    safe,
    user_by_email,
)

db_app = typer.Typer(help="Reset, migrate, check, back up and restore the database.", no_args_is_help=True)

DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]
ProjectDir = Annotated[
    str | None, typer.Option("--project-dir", help="Folder with migrations/ and seed.sql (default: ./supabase).")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
Email = Annotated[str, typer.Argument(help="The user's e-mail address.")]


def _confirm(yes: bool, question: str) -> None:
    if not yes and not typer.confirm(question):
        raise typer.Abort()


def _target(conn: psycopg.Connection[Any]) -> str:
    return f"{conn.info.host or 'local socket'}/{conn.info.dbname}"


@db_app.command("reset")
def reset_command(
    db_url: DbUrl = None,
    project_dir: ProjectDir = None,
    no_seed: Annotated[bool, typer.Option("--no-seed", help="Skip supabase/seed.sql.")] = False,
    yes: Yes = False,
) -> None:
    """Drop everything the migrations made, re-apply them and seed, like `supabase db reset`.

    Example: idea-expansion db reset --yes
    """
    with command_errors():
        project = find_project(project_dir)
        with connect(db_url) as conn:
            target = _target(conn)
            _confirm(yes, f"Reset {target}? All data in it will be deleted.")
            result = reset(conn, project, seed=not no_seed, progress=lambda line: console.print(line, style="dim"))
            console.print(
                f"[green]Reset {target}[/]: {len(result.applied)} migrations applied"
                + (", Supabase-compatibility bootstrap applied" if result.bootstrapped else "")
                + (", seeded" if result.seeded else ""),
                soft_wrap=True,
            )
            print_summary(conn)


@db_app.command("migrate")
def migrate_command(db_url: DbUrl = None, project_dir: ProjectDir = None) -> None:
    """Apply only the pending migrations, like `supabase migration up`.

    Example: idea-expansion db migrate
    """
    with command_errors():
        project = find_project(project_dir)
        with connect(db_url) as conn:
            if database_kind(conn) == "plain":
                bootstrap(conn)
            applied = migrate(conn, project, progress=lambda line: console.print(line, style="dim"))
            console.print(f"[green]{len(applied)} migration(s) applied[/]" if applied else "Already up to date.")


@db_app.command("bootstrap")
def bootstrap_command(db_url: DbUrl = None) -> None:
    """Create Supabase's roles and auth/storage/extensions schemas on a plain PostgreSQL database.

    Example: idea-expansion db bootstrap --db-url postgresql://postgres@127.0.0.1:5432/mydb
    """
    with command_errors(), connect(db_url) as conn:
        bootstrap(conn)
        console.print(f"[green]Supabase-compatibility bootstrap applied[/] to {conn.info.dbname}")


@db_app.command("status")
def status_command(db_url: DbUrl = None, project_dir: ProjectDir = None, json_output: bool = JsonOption) -> None:
    """Show applied and pending migrations. With --json: {"database_kind", "applied", "pending", "unknown",
    "migrations": [{"version", "name", "state": "applied" | "pending" | "unknown"}]} on stdout.

    Example: idea-expansion db status --json
    """
    with command_errors():
        project = find_project(project_dir)
        with connect(db_url) as conn:
            status = migration_status(conn, project)
            kind = database_kind(conn)
            if json_output:
                done = set(status.applied)
                migrations = [
                    {"version": m.version, "name": m.name, "state": "applied" if m.version in done else "pending"}
                    for m in project.migrations()
                ] + [{"version": v, "name": None, "state": "unknown"} for v in status.unknown]
                document = {
                    "database_kind": kind,
                    "applied": len(status.applied),
                    "pending": len(status.pending),
                    "unknown": len(status.unknown),
                    "migrations": migrations,
                }
                typer.echo(json.dumps(document, indent=2))
                return
            table = Table(title=f"Migrations ({kind} database)")
            for column in ("version", "name", "state"):
                table.add_column(column)
            applied = set(status.applied)
            for migration in project.migrations():
                state = "[green]applied[/]" if migration.version in applied else "[yellow]pending[/]"
                table.add_row(migration.version, migration.name, state)
            for version in status.unknown:
                table.add_row(version, "?", "[red]applied, no file here[/]")
            console.print(table)


_RESULT = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "skip": "[dim]skipped[/]"}


@db_app.command("doctor")
def doctor_command(db_url: DbUrl = None, project_dir: ProjectDir = None, json_output: bool = JsonOption) -> None:
    """Check the database: connection, tables, RLS, policies, functions and grants, triggers, the images
    bucket, the migration history and the Realtime publication (skipped where the database is not
    Supabase's). Exit code 1 when any check fails, an empty or half-migrated database included. With
    --json: {"ok", "checks": [{"name", "status": "pass" | "fail" | "skip", "detail", "fix"}]} on stdout.

    Example: idea-expansion db doctor --json
    """
    with command_errors():
        project = find_project(project_dir)
        with connect(db_url) as conn:
            checks = doctor(conn, project)
        failed = [c for c in checks if c.failed]
        if json_output:
            document = {
                "ok": not failed,
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks],
            }
            typer.echo(json.dumps(document, indent=2))
        else:
            _print_checks(checks)
        ran = [c for c in checks if c.status != "skip"]
        if failed:
            # An empty or half-migrated database: say so, not just which objects are missing.
            history = next((c for c in failed if c.name == "migration history"), None)
            state = history.detail.split(";")[0] if history else ""
            hint = f"; {state}: run idea-expansion db migrate" if state.startswith(("no migrations", "half")) else ""
            fail(f"{len(failed)} of {len(ran)} checks failed: {', '.join(c.name for c in failed)}{hint}")
        if not json_output:
            skipped = len(checks) - len(ran)
            console.print(f"[green]all {len(ran)} checks passed[/]" + (f" ({skipped} skipped)" if skipped else ""))


def _print_checks(checks: list[Check]) -> None:
    table = Table(title="Database doctor")
    for column in ("check", "result", "details", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, _RESULT[check.status], literal(check.detail), literal(check.fix))
    console.print(table)


@db_app.command("reset-data")
def reset_data_command(
    db_url: DbUrl = None,
    admin_email: Annotated[str, typer.Option("--admin-email", help="The admin to keep.")] = "admin@example.com",
    yes: Yes = False,
) -> None:
    """Delete all data but keep the schema and the admin user, with 100 credits (5 free + 95 paid).

    Example: idea-expansion db reset-data --yes
    """
    with command_errors(), connect(db_url) as conn:
        _confirm(yes, f"Delete every user but {admin_email} and all ideas, runs and payments in {_target(conn)}?")
        reset_data(conn, admin_email=admin_email.lower())
        console.print(f"[green]Data deleted[/]; kept {safe(admin_email)} with 100 credits.")
        print_summary(conn)


@db_app.command("complete-reset")
def complete_reset_command(db_url: DbUrl = None, yes: Yes = False) -> None:
    """Drop everything the migrations created (tables, functions, policies, the images bucket, the
    migration history). `idea-expansion db migrate` builds it again.

    Example: idea-expansion db complete-reset --yes
    """
    with command_errors(), connect(db_url) as conn:
        _confirm(yes, f"Drop all application tables, functions and policies in {_target(conn)}? This cannot be undone.")
        complete_reset(conn)
        console.print("[green]Everything the migrations created is gone.[/] Rebuild with: idea-expansion db migrate")


@db_app.command("seed-admin")
def seed_admin_command(
    db_url: DbUrl = None,
    email: Annotated[str, typer.Option("--email", help="Admin e-mail.")] = "admin@example.com",
    name: Annotated[str, typer.Option("--name", help="Admin name.")] = "Admin",
    free: Annotated[int, typer.Option("--free", min=0, help="Free credits to set.")] = 5,
    paid: Annotated[int, typer.Option("--paid", min=0, help="Paid credits to set.")] = 95,
) -> None:
    """Create (or update) the admin user and set their credits; lifetime counters are kept.

    Example: idea-expansion db seed-admin --email ops@example.com --paid 195
    """
    with command_errors(), connect(db_url) as conn, conn.transaction():
        row = conn.execute(
            "insert into public.users (email, name) values (lower(%s), %s) "
            "on conflict (email) do update set name = excluded.name returning id",
            (email, name),
        ).fetchone()
        assert row is not None
        conn.execute(
            "update public.usage_tracking set free_expansions_remaining = %s, paid_credits_remaining = %s "
            "where user_id = %s",
            (free, paid, row[0]),
        )
        console.print(f"[green]{safe(email.lower())}[/]: {free} free + {paid} paid = {free + paid} credits")


@db_app.command("backup")
def backup_command(
    file: Annotated[Path, typer.Argument(help="Where to write the backup (pg_dump custom format).")],
    db_url: DbUrl = None,
) -> None:
    """Back up every row of every application table (plus auth.users and stored-file rows). The file is
    private (mode 0600: it holds password hashes and credential ciphertexts); an existing file is
    replaced by a new private one only once the dump is complete.

    Example: idea-expansion db backup backup-20260127.dump
    """
    with command_errors():
        url = database_url(db_url)
        backup(url, file)
        with psycopg.connect(url) as conn:
            counts = table_fingerprints(conn)
        console.print(
            f"[green]Backed up[/] {sum(c for c, _ in counts.values())} rows to {file} ({file.stat().st_size} bytes)"
        )


@db_app.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(help="A file written by `idea-expansion db backup`.")],
    db_url: DbUrl = None,
    project_dir: ProjectDir = None,
    yes: Yes = False,
) -> None:
    """Rebuild the database from the migrations and load a backup into it (replacing all data), in one
    transaction. Nothing in the file is run as SQL: only its rows are read, checked against the schema
    and loaded. A truncated, corrupted or edited backup is refused and the database is left exactly as
    it was; other sessions wait for the restore and then see the restored data.

    Example: idea-expansion db restore backup-20260127.dump --db-url postgresql://postgres@127.0.0.1:5432/copy
    """
    with command_errors():
        project = find_project(project_dir)
        url = database_url(db_url)
        with psycopg.connect(url, autocommit=True) as conn:
            _confirm(yes, f"Replace everything in {_target(conn)} with {file}?")
            restore(conn, url, project, file)
            counts = table_fingerprints(conn)
        console.print(f"[green]Restored[/] {sum(c for c, _ in counts.values())} rows from {file}")


@db_app.command("stop")
def stop_command() -> None:
    """Stop the embedded local database server (it keeps running between commands).

    Example: idea-expansion db stop
    """
    with command_errors():
        console.print("stopped the embedded database" if stop_embedded() else "the embedded database is not running")


# -- the guide's db-helper commands, for any user by e-mail --------------------------------------------------
@db_app.command("check-ideas")
def check_ideas(email: Email, db_url: DbUrl = None) -> None:
    """List a user's ideas. Example: idea-expansion db check-ideas ada@example.com"""
    with command_errors(), open_client(db_url) as client:
        user = user_by_email(client, email)
        emit(
            list(client.ideas.list(user_id=user.id, limit=1000)),
            ["id", "title", "status", "created_at"],
            title=f"Ideas of {user.email}",
        )


@db_app.command("check-outputs")
def check_outputs(email: Email, db_url: DbUrl = None) -> None:
    """List a user's outputs. Example: idea-expansion db check-outputs ada@example.com"""
    with command_errors(), open_client(db_url) as client:
        user = user_by_email(client, email)
        emit(
            list(client.outputs.list(user_id=user.id, limit=1000)),
            ["id", "idea_id", "format", "created_at"],
            title=f"Outputs of {user.email}",
        )


@db_app.command("check-join")
def check_join(email: Email, db_url: DbUrl = None) -> None:
    """Each idea with its newest output (ordered, not arbitrary).

    Example: idea-expansion db check-join ada@example.com
    """
    with command_errors(), open_client(db_url) as client:
        user = user_by_email(client, email)
        newest: dict[Any, Any] = {}
        for output in client.outputs.list(user_id=user.id, limit=1000):  # newest first
            if output.idea_id is not None:
                newest.setdefault(output.idea_id, output)
        rows = [
            {
                "idea": i.title,
                "status": i.status.value,
                "output_id": getattr(newest.get(i.id), "id", None),
                "output_format": getattr(newest.get(i.id), "format", None),
                "output_created_at": getattr(newest.get(i.id), "created_at", None),
            }
            for i in client.ideas.list(user_id=user.id, limit=1000)
        ]
        emit(
            rows,
            ["idea", "status", "output_id", "output_format", "output_created_at"],
            title=f"Ideas and their newest output ({user.email})",
        )


@db_app.command("check-fk")
def check_fk(db_url: DbUrl = None) -> None:
    """Every foreign key with its orphaned-row count (must be 0). Example: idea-expansion db check-fk"""
    with command_errors(), connect(db_url) as conn:
        rows = [{"table": t, "constraint": c, "references": r, "orphans": n} for t, c, r, n in foreign_key_report(conn)]
        emit(rows, ["table", "constraint", "references", "orphans"], title="Foreign keys")
        bad = [r for r in rows if r["orphans"]]
        if bad:
            fail(f"{len(bad)} foreign key(s) have orphaned rows")
        console.print(f"[green]{len(rows)} foreign keys, no orphaned rows[/]")


@db_app.command("clear")
def clear(email: Email, db_url: DbUrl = None, yes: Yes = False) -> None:
    """Delete a user's outputs, runs and ideas (the user and their credits stay).

    Example: idea-expansion db clear ada@example.com --yes
    """
    with command_errors(), open_client(db_url) as client:
        user = user_by_email(client, email)
        _confirm(yes, f"Delete all ideas, runs and outputs of {printable(user.email)}?")
        with connect(db_url) as conn, conn.transaction():
            in_flight = conn.execute(
                "select count(*) from public.executions where user_id = %s and status in ('queued', 'running') ",
                (user.id,),
            ).fetchone()
            if in_flight and in_flight[0]:
                fail(
                    f"{user.email} has {in_flight[0]} run(s) queued or running, holding credits; "
                    "let them finish (or reap them) before clearing"
                )
            runs = conn.execute("delete from public.executions where user_id = %s", (user.id,)).rowcount
            ideas = conn.execute("delete from public.ideas where user_id = %s", (user.id,)).rowcount
        console.print(
            f"[green]Cleared {safe(user.email)}[/]: {ideas} ideas and {runs} runs (with their outputs) deleted"
        )


def print_summary(conn: psycopg.Connection[Any]) -> None:
    counts = Table(title="Tables")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for name in APP_TABLES:
        row = conn.execute(f"select count(*) from public.{name}").fetchone()  # names are constants
        counts.add_row(name, str(row[0] if row else 0))
    console.print(counts)

    credits = Table(title="Credits")
    for column in ("email", "free", "paid", "total remaining", "used"):
        credits.add_column(column, justify="left" if column == "email" else "right")
    for email, free, paid, used in conn.execute(
        "select u.email, t.free_expansions_remaining, t.paid_credits_remaining, t.total_expansions_used "
        "from public.users u join public.usage_tracking t on t.user_id = u.id order by u.created_at"
    ):
        credits.add_row(literal(email), str(free), str(paid), str(free + paid), str(used))
    console.print(credits)
