"""`idea-expansion db ...`: reset and inspect the database."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from ..local import bootstrap, database_kind, find_project, migration_status, reset, stop_embedded
from ._common import DB_URL_HELP, command_errors, connect, console

db_app = typer.Typer(help="Reset, bootstrap and inspect the database.", no_args_is_help=True)

DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]
ProjectDir = Annotated[
    str | None,
    typer.Option("--project-dir", help="Folder with migrations/ and seed.sql (default: ./supabase)."),
]

_TABLES = (
    "users",
    "ideas",
    "credentials",
    "executions",
    "outputs",
    "blog_posts",
    "usage_tracking",
    "payment_receipts",
    "credit_charges",
)


@db_app.command("reset")
def reset_command(
    db_url: DbUrl = None,
    project_dir: ProjectDir = None,
    no_seed: Annotated[bool, typer.Option("--no-seed", help="Skip supabase/seed.sql.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop everything the migrations made, re-apply them and seed, like `supabase db reset`.

    Example: idea-expansion db reset --yes
    """
    with command_errors():
        project = find_project(project_dir)
        with connect(db_url) as conn:
            target = f"{conn.info.host or 'local socket'}/{conn.info.dbname}"
            if not yes and not typer.confirm(f"Reset {target}? All data in it will be deleted."):
                raise typer.Abort()
            result = reset(conn, project, seed=not no_seed, progress=lambda line: console.print(line, style="dim"))
            console.print(
                f"[green]Reset {target}[/]: {len(result.applied)} migrations applied"
                + (", Supabase-compatibility bootstrap applied" if result.bootstrapped else "")
                + (", seeded" if result.seeded else ""),
                soft_wrap=True,
            )
            _print_summary(conn)


@db_app.command("bootstrap")
def bootstrap_command(db_url: DbUrl = None) -> None:
    """Create Supabase's roles and auth/storage/extensions schemas on a plain PostgreSQL database.

    Example: idea-expansion db bootstrap --db-url postgresql://postgres@127.0.0.1:5432/mydb
    """
    with command_errors(), connect(db_url) as conn:
        bootstrap(conn)
        console.print(f"[green]Supabase-compatibility bootstrap applied[/] to {conn.info.dbname}")


@db_app.command("status")
def status_command(db_url: DbUrl = None, project_dir: ProjectDir = None) -> None:
    """Show applied and pending migrations.

    Example: idea-expansion db status
    """
    with command_errors():
        project = find_project(project_dir)
        with connect(db_url) as conn:
            status = migration_status(conn, project)
            table = Table(title=f"Migrations ({database_kind(conn)} database)")
            table.add_column("version")
            table.add_column("name")
            table.add_column("state")
            applied = set(status.applied)
            for migration in project.migrations():
                state = "[green]applied[/]" if migration.version in applied else "[yellow]pending[/]"
                table.add_row(migration.version, migration.name, state)
            for version in status.unknown:
                table.add_row(version, "?", "[red]applied, no file here[/]")
            console.print(table)


@db_app.command("stop")
def stop_command() -> None:
    """Stop the embedded local database server (it keeps running between commands).

    Example: idea-expansion db stop
    """
    with command_errors():
        console.print("stopped the embedded database" if stop_embedded() else "the embedded database is not running")


def _print_summary(conn: psycopg.Connection[Any]) -> None:
    counts = Table(title="Tables")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for name in _TABLES:
        row = conn.execute(f"select count(*) from public.{name}").fetchone()  # names are constants above
        counts.add_row(name, str(row[0] if row else 0))
    console.print(counts)

    credits = Table(title="Credits")
    for column in ("email", "free", "paid", "total remaining", "used"):
        credits.add_column(column, justify="left" if column == "email" else "right")
    for email, free, paid, used in conn.execute(
        "select u.email, t.free_expansions_remaining, t.paid_credits_remaining, t.total_expansions_used "
        "from public.users u join public.usage_tracking t on t.user_id = u.id order by u.created_at"
    ):
        credits.add_row(email, str(free), str(paid), str(free + paid), str(used))
    console.print(credits)
