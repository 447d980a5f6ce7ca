"""`idea-expansion report ...`: the database guide's common queries as tables, JSON or CSV."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import DB_URL_HELP, CsvOption, JsonOption, command_errors, emit, open_client

report_app = typer.Typer(help="Reports: users, top users, failures, payments, executions.", no_args_is_help=True)
DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many rows.")]


@report_app.command("users")
def users(db_url: DbUrl = None, json: bool = JsonOption, csv: bool = CsvOption) -> None:
    """Every user with ideas, outputs and credits. Example: idea-expansion report users --csv"""
    with command_errors(), open_client(db_url) as client:
        emit(
            list(client.reports.users()),
            ["email", "ideas", "outputs", "free_remaining", "paid_remaining", "total_remaining"],
            title="Users",
            as_json=json,
            as_csv=csv,
        )


@report_app.command("top-users")
def top_users(db_url: DbUrl = None, limit: Limit = 10, json: bool = JsonOption, csv: bool = CsvOption) -> None:
    """Users by number of outputs. Example: idea-expansion report top-users --limit 5"""
    with command_errors(), open_client(db_url) as client:
        emit(
            client.reports.top_users(limit),
            ["email", "output_count", "latest_output"],
            title="Top users",
            as_json=json,
            as_csv=csv,
        )


@report_app.command("failed")
def failed(db_url: DbUrl = None, json: bool = JsonOption, csv: bool = CsvOption) -> None:
    """Failed expansions by user and failing step. Example: idea-expansion report failed --json"""
    with command_errors(), open_client(db_url) as client:
        emit(
            list(client.reports.failed()),
            ["email", "error_step", "failures", "latest"],
            title="Failed expansions",
            as_json=json,
            as_csv=csv,
        )


@report_app.command("payments")
def payments(
    db_url: DbUrl = None,
    summary: Annotated[bool, typer.Option("--summary", help="Totals per user (verified payments).")] = False,
    json: bool = JsonOption,
    csv: bool = CsvOption,
) -> None:
    """All payments, or totals per user. Example: idea-expansion report payments --summary"""
    with command_errors(), open_client(db_url) as client:
        if summary:
            emit(
                list(client.reports.payment_summary()),
                ["email", "payments", "total_credits", "total_spent"],
                title="Payments per user",
                as_json=json,
                as_csv=csv,
            )
        else:
            emit(
                list(client.reports.payments()),
                ["email", "amount_usd", "credits_purchased", "bmc_reference", "status", "verified_at", "receipt_id"],
                title="Payments",
                as_json=json,
                as_csv=csv,
            )


@report_app.command("executions")
def executions(
    db_url: DbUrl = None,
    summary: Annotated[bool, typer.Option("--summary", help="Totals per user, with tokens.")] = False,
    limit: Limit = 10,
    json: bool = JsonOption,
    csv: bool = CsvOption,
) -> None:
    """Recent runs, or totals per user. Example: idea-expansion report executions --summary"""
    with command_errors(), open_client(db_url) as client:
        if summary:
            emit(
                list(client.reports.execution_summary()),
                ["email", "total_executions", "successful", "partial", "failed", "total_tokens"],
                title="Executions per user",
                as_json=json,
                as_csv=csv,
            )
        else:
            emit(
                client.reports.executions(limit),
                ["email", "format_chosen", "status", "tokens_used", "duration_seconds", "error_step", "started_at"],
                title="Recent executions",
                as_json=json,
                as_csv=csv,
            )
