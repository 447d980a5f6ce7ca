"""`idea-expansion demo`: the whole story in a few seconds, on the embedded database by default."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.panel import Panel
from rich.rule import Rule

from .._client import IdeaExpansion
from .._exceptions import InsufficientCreditsError
from .._settings import Settings
from ..local import find_project, is_embedded, reset
from ..pipeline import OfflineProvider, Pipeline
from ..types import OutputFormat
from ._common import DB_URL_HELP, command_errors, connect_url, console, database_url, safe
from ._render import show_output, stage_progress

DEMO_EMAIL = "demo@example.com"
IDEAS = [
    (
        "Why small teams should hold fewer meetings",
        "Most status meetings can be a written update; the meetings that remain get better.",
        ["write status updates asynchronously", "decide in documents", "keep one weekly conversation"],
        OutputFormat.BLOG_POST,
    ),
    ("Remote work tips for new hires", None, ["overcommunicate early", "ask for a buddy"], OutputFormat.TWITTER_THREAD),
    (
        "A CLI that explains regular expressions in plain English",
        "Paste a pattern, read what it matches.",
        ["works offline", "colour output"],
        OutputFormat.GITHUB_REPO,
    ),
]
MORE_IDEAS = [
    ("A poster for the spring meetup", "Bold, simple, readable from across the room.", [], OutputFormat.IMAGE),
    ("Keep a decision log", "Write down why, not just what.", ["date, decision, reasons"], None),
    ("Ship small changes daily", "Smaller diffs, faster reviews, fewer surprises.", ["one idea per PR"], None),
]


def demo_command(
    db_url: Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Reset a DATABASE_URL / --db-url database without asking.")
    ] = False,
) -> None:
    """Reset the database and tell the whole story: a user, ideas, expansions of every format with the
    offline provider, credits running out, an admin grant and a run on a paid credit.

    Example: idea-expansion demo
    """
    with command_errors():
        settings = Settings()
        chosen = db_url or (settings.database_url.get_secret_value() if settings.database_url else "")
        # The embedded database is the demo's own sandbox; any other is reset only when the user agrees.
        target_given = bool(chosen) and not is_embedded(chosen)
        url = database_url(db_url)
        project = find_project()
        with connect_url(url) as conn:
            if (
                target_given
                and not yes
                and not typer.confirm(
                    f"The demo resets {conn.info.dbname} on {conn.info.host or 'a local socket'}. Continue?"
                )
            ):
                raise typer.Abort()
            console.print(Rule("1. A fresh database"))
            result = reset(conn, project)
        console.print(f"{len(result.applied)} migrations applied; seeded the admin with 100 credits.")

        with (
            IdeaExpansion(settings=settings, backend="postgres", database_url=url) as client,
            Pipeline(client, provider=OfflineProvider()) as pipeline,
        ):
            console.print(Rule("2. A user and three ideas"))
            user = client.users.create(email=DEMO_EMAIL, name="Demo User")
            console.print(
                f"{safe(user.email)} signed up: {client.credits.balance(user.id).total_remaining} free credits."
            )
            queue = [_add(client, user.id, idea) for idea in IDEAS]
            for title, *_ in IDEAS:
                console.print(f"  • {safe(title)}")

            console.print(Rule("3. Expansions (offline provider: templates, no model, says so)"))
            more = iter(MORE_IDEAS)
            while True:
                if not queue:
                    queue.append(_add(client, user.id, next(more)))
                idea_id, fmt = queue.pop(0)
                try:
                    _expand(client, pipeline, user.id, idea_id, fmt)
                except InsufficientCreditsError as exc:
                    console.print(
                        Panel(
                            f"[bold red]Refused:[/] {safe(exc.message)} ({safe(exc.code)})\n{safe(exc.hint or '')}",
                            title="out of credits",
                            expand=False,
                        )
                    )
                    queue.insert(0, (idea_id, fmt))
                    break

            console.print(Rule("4. The user pays; an admin grants 5 credits"))
            receipt = client.credits.grant(
                user.email, 5, "5.00", f"BMC-DEMO-{uuid.uuid4().hex[:8].upper()}", verified_by="demo-admin"
            )
            console.print(
                Panel(
                    f"Receipt ID:   {receipt.id}\n"
                    f"Amount:       ${receipt.amount_usd}\n"
                    f"Credits:      {receipt.credits_purchased}\n"
                    f"Reference:    {safe(receipt.bmc_reference)}\n"
                    f"Status:       {receipt.status.value}",
                    title="payment receipt",
                    expand=False,
                )
            )

            console.print(Rule("5. One more run, on a paid credit"))
            idea_id, fmt = queue.pop(0)
            _expand(client, pipeline, user.id, idea_id, fmt)
            charges = list(client.credits.charges(user.id))
            console.print(
                f"charges: {sum(c.credit_type == 'free' for c in charges)} free, "
                f"{sum(c.credit_type == 'paid' for c in charges)} paid"
            )
        console.print(Rule())
        console.print(
            "Try: [bold]idea-expansion report executions --summary[/], "
            "[bold]idea-expansion admin usage demo@example.com[/], [bold]idea-expansion db doctor[/]"
        )


def _add(client: IdeaExpansion, user_id: uuid.UUID, idea: tuple) -> tuple[uuid.UUID, OutputFormat | None]:  # type: ignore[type-arg]
    title, description, bullets, fmt = idea
    created = client.ideas.create(user_id=user_id, title=title, description=description, bullets=bullets)
    return created.id, fmt


def _expand(
    client: IdeaExpansion, pipeline: Pipeline, user_id: uuid.UUID, idea_id: uuid.UUID, fmt: OutputFormat | None
) -> None:
    title = client.ideas.get(idea_id).title
    with stage_progress(title[:40]) as on_progress:
        result = pipeline.expand(user_id, idea_id=idea_id, format=fmt, on_progress=on_progress)
    e = result.execution
    note = f" — {safe(e.error_message)}" if e.error_message else ""
    console.print(f"[bold]{e.status.value}[/]: {e.format_chosen} (judge {e.judge_score}/100){note}", soft_wrap=True)
    for output in result.outputs:
        show_output(output)
    b = client.credits.balance(user_id)
    console.print(f"[cyan]credits: {b.free_expansions_remaining} free, {b.paid_credits_remaining} paid[/]\n")
