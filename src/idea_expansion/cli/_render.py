"""Showing what a run produced, in the terminal."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.tree import Tree

from ..pipeline import BlogPostContent, GitHubRepoContent, ImageContent, TwitterThreadContent, parse_content
from ..types import Output, Stage
from ._common import console

# The stages a run passes through, by format (image: cover or image; publish: repositories only).
_STAGES = [Stage.SELECT, Stage.JUDGE, Stage.CHOOSE_FORMAT, Stage.GENERATE, Stage.IMAGE, Stage.PUBLISH, Stage.PERSIST]


@contextmanager
def stage_progress(label: str) -> Iterator[Callable[[Stage, uuid.UUID], None]]:
    """A progress bar that moves through the pipeline's stages; yields the on_progress callback."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=len(_STAGES), stage="start")

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
    content = parse_content(output.format, output.content)
    if isinstance(content, BlogPostContent):
        text = content.markdown if full else "\n\n".join(content.markdown.split("\n\n")[:5]) + "\n\n…"
        console.print(Panel(Markdown(text), title=f"blog post: {content.title}", subtitle=f"/{content.slug}"))
        console.print(
            f"  {content.word_count} words, {content.reading_time_minutes} min read; tags: "
            f"{', '.join(content.tags) or '-'}; social post: {content.social_post}"
        )
        if content.cover_image:
            console.print(f"  cover image: {content.cover_image.storage_path}")
    elif isinstance(content, TwitterThreadContent):
        console.print(Panel("\n\n".join(content.posts), title=f"thread ({len(content.posts)} posts)"))
    elif isinstance(content, GitHubRepoContent):
        tree = Tree(f"[bold]{content.repo_name}[/]  {content.description}")
        for file in content.files:
            tree.add(f"{file.path}  [dim]({len(file.content)} bytes)[/]")
        console.print(tree)
        console.print(f"  run: {content.run_instructions}")
        if full:
            for file in content.files:
                console.print(Panel(file.content, title=file.path))
        where = output.publication_url or "not published (see the run's error)"
        console.print(f"  GitHub: {where}")
    elif isinstance(content, ImageContent):
        console.print(
            Panel(
                f"{content.caption}\n\nstored at: {content.image.storage_path}\nurl: {content.image.url}\n"
                f"{content.image.width}x{content.image.height} {content.image.mime_type}",
                title="image",
            )
        )
