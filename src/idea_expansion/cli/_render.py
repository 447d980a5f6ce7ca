"""Showing what a run produced, in the terminal. Everything in an output is user data (the idea's
words, or a model's answer to them): bodies are rendered as Markdown or as plain text inside a panel,
never as Rich markup; titles and one-line fields go through `safe` / `literal`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..pipeline.pricing import PriceTable
from ..types import (
    BlogPostContent,
    Execution,
    ExecutionStatus,
    GitHubRepoContent,
    ImageContent,
    Output,
    Stage,
    TwitterThreadContent,
)
from ._common import console, literal, printable, safe

# The stages a run passes through, by format (image: cover or image; publish: repositories only).
_STAGES = [Stage.SELECT, Stage.JUDGE, Stage.CHOOSE_FORMAT, Stage.GENERATE, Stage.IMAGE, Stage.PUBLISH, Stage.PERSIST]


@contextmanager
def stage_progress(label: str, *, on: Console | None = None) -> Iterator[Callable[[Stage, uuid.UUID], None]]:
    """A progress bar that moves through the pipeline's stages; yields the on_progress callback.
    `label` is plain text (it names a user or an idea). `on`: the console (stdout's by default; stderr's
    when stdout carries JSON)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=on or console,
        transient=False,
    ) as progress:
        task = progress.add_task(printable(label), total=len(_STAGES), stage="start")

        def on_progress(stage: Stage, _: uuid.UUID) -> None:
            progress.update(task, completed=_STAGES.index(stage), stage=stage.value)

        try:
            yield on_progress
        except BaseException:
            progress.update(task, stage="[red]stopped[/]")
            raise
        progress.update(task, completed=len(_STAGES), stage="done")


def show_output(output: Output, *, full: bool = False) -> None:
    """A blog excerpt rendered as Markdown, a thread, a repository's file tree, or an image's path."""
    content = output.content
    if isinstance(content, BlogPostContent):
        text = content.markdown if full else "\n\n".join(content.markdown.split("\n\n")[:5]) + "\n\n…"
        console.print(
            Panel(
                # links show their target: the words of a link are the author's, the address is what opens
                Markdown(printable(text, multiline=True), hyperlinks=False),
                title=Text.assemble("blog post: ", printable(content.title)),
                subtitle=literal(f"/{content.slug}"),
            )
        )
        console.print(
            f"  {content.word_count} words, {content.reading_time_minutes} min read; tags: "
            f"{safe(', '.join(content.tags) or '-')}; social post: {safe(content.social_post)}"
        )
        if content.cover_image:
            console.print(f"  cover image: {safe(content.cover_image.storage_path)}")
    elif isinstance(content, TwitterThreadContent):
        console.print(
            Panel(literal("\n\n".join(content.posts), multiline=True), title=f"thread ({len(content.posts)} posts)")
        )
    elif isinstance(content, GitHubRepoContent):
        tree = Tree(f"[bold]{safe(content.repo_name)}[/]  {safe(content.description)}")
        for file in content.files:
            tree.add(f"{safe(file.path)}  [dim]({len(file.content)} bytes)[/]")
        console.print(tree)
        console.print(f"  run: {safe(content.run_instructions)}")
        if full:
            for file in content.files:
                console.print(Panel(literal(file.content, multiline=True), title=literal(file.path)))
        where = safe(output.publication_url) if output.publication_url else "not published (see the run's error)"
        console.print(f"  GitHub: {where}")
    elif isinstance(content, ImageContent):
        console.print(
            Panel(
                f"{safe(content.caption, multiline=True)}\n\nstored at: {safe(content.image.storage_path)}\n"
                f"url: {image_location(content.image.url)}\n"
                f"{content.image.width}x{content.image.height} {safe(content.image.mime_type)}",
                title="image",
            )
        )


def image_location(url: str) -> str:
    """Where an image is, for a person: its URL, or, for the title card of a run that was not charged (kept
    inside the output as a data: URL, never uploaded), that and not tens of kilobytes of base64."""
    if url.startswith("data:"):
        return "kept in the output, not uploaded (the run was not charged)"
    return safe(url)


FALLBACK_NOTICE = "fallback to offline templates — not charged"


def show_record(execution: Execution, *, prices: PriceTable | None) -> None:
    """What a run did and what it cost: status, format, scores, tokens (in / out), cost, how it was
    generated and whether it was charged, and each model call. A run that fell back to the offline
    templates says so in its own line. Fields of the run record that this database does not have yet are
    left out (older migrations). `prices`: the price table the run was priced with, to say why a cost
    is unknown (no table, a server that reported no usage, or models the table does not name)."""
    e = execution
    generation: str | None = getattr(e, "generation", None)
    charged: bool | None = getattr(e, "charged", None)
    input_tokens: int | None = getattr(e, "input_tokens", None)
    output_tokens: int | None = getattr(e, "output_tokens", None)
    cost = getattr(e, "cost_usd", None)
    review_score: int | None = getattr(e, "review_score", None)
    calls: list[Any] = list(getattr(e, "model_calls", None) or [])
    tokens = f"{e.tokens_used} tokens"
    if input_tokens is not None and output_tokens is not None:
        tokens += f" ({input_tokens} in, {output_tokens} out)"
    line = (
        f"[bold]{e.status.value}[/] run {e.id}: format {e.format_chosen}, judge score {e.judge_score}, "
        f"{tokens}, {e.duration_seconds}s"
    )
    if review_score is not None:
        line += f", review score {review_score}"
    if cost is not None:
        line += f", cost ${cost}"
    elif calls and any(_field(c, "provider") not in (None, "offline") for c in calls):
        line += f", cost unknown ({_why_no_cost(calls, prices)})"
    if e.error_message:
        line += f"; {safe(e.error_message)}"
    console.print(line)
    if generation == "fallback":  # why is in the run's error message, printed above
        console.print(f"[bold yellow]⚠ {FALLBACK_NOTICE}[/] (its credit was released; the output stays private)")
    elif generation is not None or charged is not None:
        how = f"generation: {safe(generation or '-')}"
        if charged is not None and e.status != ExecutionStatus.FAILED:
            how += "; charged" if charged else "; not charged (its credit was released)"
        console.print(how)
    if calls:
        table = Table(title="model calls")
        for column in ("stage", "task", "provider", "model", "in", "out", "note"):
            table.add_column(column, overflow="fold")
        for call in calls:
            table.add_row(
                *(literal(_field(call, name) or "-") for name in ("stage", "task", "provider", "model")),
                str(_field(call, "input_tokens") or 0),
                str(_field(call, "output_tokens") or 0),
                _call_note(call),
            )
        console.print(table)


def _call_note(call: Any) -> str:
    """What the calls table says of a call beyond its numbers: failed, the fallback that made the run
    uncharged, or an auxiliary call (judge, choice, plan, review) the templates answered after the models
    failed, which is recorded but charged as usual."""
    if _field(call, "failed"):
        return "failed"
    if _field(call, "fallback"):
        return "fallback: not charged"
    if _field(call, "fallback_errors"):
        return "offline after model errors" if _field(call, "provider") == "offline" else "after model errors"
    return ""


def _why_no_cost(calls: list[Any], prices: PriceTable | None) -> str:
    if prices is None:
        return "no price table"
    paid = [c for c in calls if _field(c, "provider") not in (None, "offline")]
    unpriced = sorted({str(_field(c, "model")) for c in paid if prices.price(str(_field(c, "model"))) is None})
    if unpriced:
        return f"no price for {safe(', '.join(unpriced))}"
    if any(_field(c, "usage_reported") is False for c in paid):
        return "a server reported no token usage"
    return "not recorded"


def _field(call: Any, name: str) -> Any:
    """A field of a model call, whether it is a model or (an older row) a plain object."""
    return call.get(name) if isinstance(call, dict) else getattr(call, name, None)
