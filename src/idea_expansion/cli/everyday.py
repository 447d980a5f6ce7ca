"""Everyday commands: ideas, expand, outputs, credits."""

from __future__ import annotations

from typing import Annotated

import typer

from .._settings import Settings
from ..pipeline import Pipeline
from ..types import IdeaStatus, OutputFormat
from ._common import (
    DB_URL_HELP,
    CsvOption,
    JsonOption,
    command_errors,
    console,
    emit,
    fail,
    open_client,
    safe,
    user_by_email,
)
from ._render import show_output, stage_progress

DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]
UserOpt = Annotated[str, typer.Option("--user", "-u", help="The user's e-mail address.")]

ideas_app = typer.Typer(help="Add, list and archive ideas.", no_args_is_help=True)
outputs_app = typer.Typer(help="List and show generated outputs.", no_args_is_help=True)


@ideas_app.command("add")
def ideas_add(
    title: Annotated[str, typer.Argument(help="The idea's title (1-200 characters).")],
    user: UserOpt,
    description: Annotated[str | None, typer.Option("--description", "-d", help="More detail.")] = None,
    bullet: Annotated[list[str] | None, typer.Option("--bullet", "-b", help="A point (repeatable).")] = None,
    link: Annotated[list[str] | None, typer.Option("--link", "-l", help="A link (repeatable).")] = None,
    db_url: DbUrl = None,
) -> None:
    """Add an idea for a user.

    Example: idea-expansion ideas add "A CLI that explains regexes" -u ada@example.com -b offline
    """
    with command_errors(), open_client(db_url) as client:
        owner = user_by_email(client, user)
        idea = client.ideas.create(
            user_id=owner.id, title=title, description=description, bullets=bullet, external_links=link
        )
        console.print(f"[green]Added[/] {idea.id}: {safe(idea.title)}")


@ideas_app.command("list")
def ideas_list(
    user: UserOpt,
    status: Annotated[IdeaStatus | None, typer.Option("--status", help="Only this status.")] = None,
    db_url: DbUrl = None,
    json: bool = JsonOption,
    csv: bool = CsvOption,
) -> None:
    """A user's ideas, newest first. Example: idea-expansion ideas list -u ada@example.com --status pending"""
    with command_errors(), open_client(db_url) as client:
        owner = user_by_email(client, user)
        emit(
            list(client.ideas.list(user_id=owner.id, status=status, limit=1000)),
            ["id", "title", "status", "priority_score", "created_at"],
            title=f"Ideas of {owner.email}",
            as_json=json,
            as_csv=csv,
        )


@ideas_app.command("archive")
def ideas_archive(idea_id: Annotated[str, typer.Argument(help="The idea's id.")], db_url: DbUrl = None) -> None:
    """Archive an idea. Example: idea-expansion ideas archive 90324ede-a175-4795-9814-4ab8c2cdeb22"""
    with command_errors(), open_client(db_url) as client:
        idea = client.ideas.archive(idea_id)
        console.print(f"[green]Archived[/] {safe(idea.title)}")


def expand_command(
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user (else the idea's owner).")] = None,
    idea: Annotated[
        str | None, typer.Option("--idea", help="The idea (else the user's most promising pending one).")
    ] = None,
    format: Annotated[OutputFormat | None, typer.Option("--format", "-f", help="Force a format.")] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", "-p", help="offline, openai, anthropic, or a fallback list.")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="Make a resulting blog post or repository public (private by default).")
    ] = False,
    db_url: DbUrl = None,
) -> None:
    """Run one expansion now, with a progress bar, and show what came out.

    Example: idea-expansion expand -u ada@example.com --format blog_post --public
    """
    with command_errors(), open_client(db_url) as client:
        if idea is None and user is None:
            fail("say whose idea to expand: --user EMAIL, or --idea ID")
        owner = user_by_email(client, user) if user else client.users.get(client.ideas.get(idea).user_id)  # type: ignore[arg-type]
        settings = Settings() if provider is None else Settings(IDEA_EXPANSION_PROVIDER=provider)  # type: ignore[call-arg]
        with (
            Pipeline.from_settings(client, settings) as pipeline,
            stage_progress(f"expanding for {owner.email}") as on_progress,
        ):
            result = pipeline.expand(owner.id, idea_id=idea, format=format, public=public, on_progress=on_progress)
        e = result.execution
        console.print(
            f"[bold]{e.status.value}[/] run {e.id}: format {e.format_chosen}, judge score {e.judge_score}, "
            f"{e.tokens_used} tokens, {e.duration_seconds}s" + (f"; {safe(e.error_message)}" if e.error_message else "")
        )
        for output in result.outputs:
            show_output(output)
        balance = client.credits.balance(owner.id)
        console.print(f"credits left: {balance.free_expansions_remaining} free, {balance.paid_credits_remaining} paid")


@outputs_app.command("list")
def outputs_list(user: UserOpt, db_url: DbUrl = None, json: bool = JsonOption, csv: bool = CsvOption) -> None:
    """A user's outputs, newest first. Example: idea-expansion outputs list -u ada@example.com"""
    with command_errors(), open_client(db_url) as client:
        owner = user_by_email(client, user)
        emit(
            list(client.outputs.list(user_id=owner.id, limit=1000)),
            ["id", "format", "published", "publication_url", "created_at"],
            title=f"Outputs of {owner.email}",
            as_json=json,
            as_csv=csv,
        )


@outputs_app.command("show")
def outputs_show(output_id: Annotated[str, typer.Argument(help="The output's id.")], db_url: DbUrl = None) -> None:
    """Show an output in full (Markdown rendered). Example: idea-expansion outputs show <output id>"""
    with command_errors(), open_client(db_url) as client:
        show_output(client.outputs.get(output_id), full=True)


def credits_command(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")], db_url: DbUrl = None
) -> None:
    """A user's credits. Example: idea-expansion credits ada@example.com"""
    with command_errors(), open_client(db_url) as client:
        owner = user_by_email(client, email)
        b = client.credits.balance(owner.id)
        console.print(
            f"{safe(owner.email)}: {b.total_remaining} credits left ({b.free_expansions_remaining} free, "
            f"{b.paid_credits_remaining} paid); {b.total_expansions_used} used "
            f"({b.total_free_used} free, {b.total_paid_used} paid)"
        )
