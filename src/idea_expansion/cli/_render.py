"""Showing what a run produced, in the terminal. Everything in an output is user data (the idea's
words, or a model's answer to them): bodies are rendered as Markdown or as plain text inside a panel,
never as Rich markup; titles and one-line fields go through `safe` / `literal`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from rich.tree import Tree

from ..types import BlogPostContent, GitHubRepoContent, ImageContent, Output, Stage, TwitterThreadContent
from ._common import console, literal, printable, safe

# The stages a run passes through, by format (image: cover or image; publish: repositories only).
_STAGES = [Stage.SELECT, Stage.JUDGE, Stage.CHOOSE_FORMAT, Stage.GENERATE, Stage.IMAGE, Stage.PUBLISH, Stage.PERSIST]


@contextmanager
def stage_progress(label: str) -> Iterator[Callable[[Stage, uuid.UUID], None]]:
    """A progress bar that moves through the pipeline's stages; yields the on_progress callback.
    `label` is plain text (it names a user or an idea)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=console,
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
                f"url: {safe(content.image.url)}\n"
                f"{content.image.width}x{content.image.height} {safe(content.image.mime_type)}",
                title="image",
            )
        )
