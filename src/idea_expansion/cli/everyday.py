"""Everyday commands: ideas, expand, outputs, credits."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from .._client import IdeaExpansion
from .._exceptions import NotFoundError
from .._settings import Settings
from ..pipeline import Pipeline
from ..pipeline.content import ImageDraft
from ..pipeline.providers import RenderedImage
from ..pipeline.runner import ImageRenderer
from ..pipeline.setup import image_mode_from_settings, image_renderer_from_settings
from ..types import GitHubRepoContent, IdeaStatus, ImageContent, OutputFormat, User
from ._common import (
    DB_URL_HELP,
    CsvOption,
    JsonOption,
    command_errors,
    console,
    emit,
    err_console,
    fail,
    notice,
    open_client,
    print_json,
    safe,
    user_by_email,
    user_by_reference,
)
from ._render import image_location, show_output, show_record, stage_progress

DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]
UserOpt = Annotated[str, typer.Option("--user", "-u", help="The user's e-mail address.")]

ideas_app = typer.Typer(help="Add, list and archive ideas.", no_args_is_help=True)
outputs_app = typer.Typer(help="List, show and publish generated outputs.", no_args_is_help=True)


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


def _owner(client: IdeaExpansion, user: str | None, idea: str | None) -> User:
    """Whose run: --user (an id or an e-mail address), else the idea's owner."""
    if user is not None:
        return user_by_reference(client, user)
    if idea is None:
        fail("say whose idea to expand: --user EMAIL, or --idea ID")
    return client.users.get(client.ideas.get(idea).user_id)


# What start_expansion raises when the user has no pending idea (supabase/migrations/*_run_lifecycle.sql):
# the one PT404 that means "nothing pending". Others (no usage row, an idea that is not theirs) say their own.
NO_PENDING_IDEA = "the user has no pending idea to expand"


def _is_nothing_pending(exc: NotFoundError) -> bool:
    return exc.code == "PT404" and exc.message == NO_PENDING_IDEA


def _nothing_pending(owner: User) -> NoReturn:
    """The database refused to start: the user has no pending idea. It held no credit and recorded no run."""
    notice(
        f"no pending idea to expand for {owner.email}: nothing was run or charged "
        "(add one with: idea-expansion ideas add TITLE -u EMAIL)"
    )
    raise typer.Exit(1)


UserRefOpt = Annotated[
    str | None, typer.Option("--user", "-u", help="The user's e-mail address or id (else the idea's owner).")
]
IdeaOpt = Annotated[str | None, typer.Option("--idea", help="The idea (else the user's most promising pending one).")]
FormatOpt = Annotated[OutputFormat | None, typer.Option("--format", "-f", help="Force a format.")]
PublicOpt = Annotated[
    bool, typer.Option("--public", help="Make a resulting blog post or repository public (private by default).")
]


def expand_command(
    user: UserRefOpt = None,
    idea: IdeaOpt = None,
    format: FormatOpt = None,
    provider: Annotated[
        str | None, typer.Option("--provider", "-p", help="offline, openai, anthropic, or a fallback list.")
    ] = None,
    public: PublicOpt = False,
    db_url: DbUrl = None,
    json: bool = JsonOption,
) -> None:
    """Run one expansion now, with a progress bar, and show what came out and what it cost: tokens in
    and out, cost (with a price table), each model call, and whether the run was charged. A run that fell
    back to the offline templates says so ("fallback to offline templates — not charged"). With nothing
    pending it says so and records no run (exit code 1). --json prints the run, its output and the
    credits left as JSON (the progress bar goes to stderr).

    Example: idea-expansion expand -u ada@example.com --format blog_post --public
    """
    with command_errors(), open_client(db_url) as client:
        owner = _owner(client, user, idea)
        settings = Settings() if provider is None else Settings(IDEA_EXPANSION_PROVIDER=provider)  # type: ignore[call-arg]
        with Pipeline.from_settings(client, settings) as pipeline:
            try:
                with stage_progress(f"expanding for {owner.email}", on=err_console if json else None) as on_progress:
                    result = pipeline.expand(
                        owner.id, idea_id=idea, format=format, public=public, on_progress=on_progress
                    )
            except NotFoundError as exc:
                if idea is not None or not _is_nothing_pending(exc):  # another refusal: its error says it
                    raise
                _nothing_pending(owner)
        balance = client.credits.balance(owner.id)
        if json:
            print_json({**result.model_dump(mode="json"), "balance": balance})
            return
        show_record(result.execution, prices=pipeline.prices)
        for output in result.outputs:
            show_output(output)
        console.print(f"credits left: {balance.free_expansions_remaining} free, {balance.paid_credits_remaining} paid")


def enqueue_command(
    user: UserRefOpt = None,
    idea: IdeaOpt = None,
    format: FormatOpt = None,
    public: PublicOpt = False,
    db_url: DbUrl = None,
    json: bool = JsonOption,
) -> None:
    """Queue an expansion for the workers (`idea-expansion worker`) and print its execution id. Its credit
    is held and its idea fixed now: with no credit, or nothing pending, nothing is queued.

    Example: idea-expansion enqueue -u ada@example.com --format twitter_thread
    """
    with command_errors(), open_client(db_url) as client:
        owner = _owner(client, user, idea)
        with _modelless_pipeline(client) as pipeline:
            try:
                execution = pipeline.enqueue(owner.id, idea_id=idea, format=format, public=public)
            except NotFoundError as exc:
                if idea is not None or not _is_nothing_pending(exc):
                    raise
                _nothing_pending(owner)
        if json:
            print_json(execution)
            return
        console.print(f"[green]Queued[/] run {execution.id} for {safe(owner.email)}")


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
def outputs_show(
    output_id: Annotated[str, typer.Argument(help="The output's id.")], db_url: DbUrl = None, json: bool = JsonOption
) -> None:
    """Show an output in full (Markdown rendered); --json prints it as JSON.

    Example: idea-expansion outputs show <output id>
    """
    with command_errors(), open_client(db_url) as client:
        output = client.outputs.get(output_id)
        if json:
            print_json(output)
            return
        show_output(output, full=True)


@outputs_app.command("publish")
def outputs_publish(
    output_id: Annotated[str, typer.Argument(help="The output's id.")], db_url: DbUrl = None, json: bool = JsonOption
) -> None:
    """Publish an output, never charging again:

    - github_repo: push the repository to its owner's GitHub account (the token stored with
      `credentials set-github`), private unless the run was started with --public. A repository that is
      published already is left as it is (its URL is printed): this is the retry of a failed push.

    - blog_post: make the post public (anyone can read it), after storing its cover image again if it
      was lost.

    - image: store the image again if it was lost, and print its URL.

    - twitter_thread: nothing to publish (idea-expansion posts nowhere): copy it from `outputs show`.

    A run that was not charged (one that fell back to the offline templates) is never published
    (Pipeline.deliver refuses it).

    Example: idea-expansion outputs publish <output id>
    """
    with command_errors(), open_client(db_url) as client:
        output = client.outputs.get(output_id)
        if output.format == OutputFormat.TWITTER_THREAD:
            fail("a thread is not posted anywhere by idea-expansion: copy it from `idea-expansion outputs show ID`")
        was_published = output.published
        with _modelless_pipeline(client, redraw=True) as pipeline:
            delivered = pipeline.deliver(output.id)
        post = client.blog_posts.get_by_output(delivered.id) if delivered.format == OutputFormat.BLOG_POST else None
        if post is not None and not post.is_public:
            post = client.blog_posts.update(post.id, is_public=True)
        if json:
            print_json({"output": delivered, "blog_post": post})
            return
        content = delivered.content
        if isinstance(content, GitHubRepoContent):
            how = "was already published at" if was_published else "[green]published[/] at"
            console.print(f"{safe(content.repo_name)} {how} {safe(delivered.publication_url or '-')}")
        elif post is not None:
            console.print(f"[green]public[/]: {safe(post.title)} (/{safe(post.slug)}), since {post.published_at}")
        elif isinstance(content, ImageContent):
            console.print(f"[green]stored[/]: {image_location(content.image.url)}")


def _modelless_pipeline(client: IdeaExpansion, *, redraw: bool = False) -> Pipeline:
    """A pipeline for commands that call no model (enqueue, outputs publish): no provider is built from the
    settings, so no model API key is needed. It keeps the settings' image mode (an image run is refused
    when images are off). With `redraw` (publish), an image lost from storage is drawn again as the
    settings allow: a title card as a title card, an image model's picture by the image model (mode "model"),
    whose client (and key) is made only when such a picture is drawn."""
    settings = client.settings
    mode = image_mode_from_settings(settings)
    renderer: ImageRenderer | None = None
    if mode == "model":
        if redraw:
            renderer = _renderer_on_first_use(settings)
        else:
            mode = "card"  # images are available just the same; this pipeline draws none
    return Pipeline(client, image_mode=mode, image_renderer=renderer)


def _renderer_on_first_use(settings: Settings) -> ImageRenderer:
    """The settings' image model renderer, built (and its key required) when a first image is drawn."""
    built: list[ImageRenderer] = []

    def render(draft: ImageDraft) -> RenderedImage:
        if not built:
            renderer = image_renderer_from_settings(settings)
            assert renderer is not None, "image mode model has a renderer"
            built.append(renderer)
        return built[0](draft)

    return render


def credits_command(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")],
    db_url: DbUrl = None,
    json: bool = JsonOption,
) -> None:
    """A user's credits (--json: their usage record). Example: idea-expansion credits ada@example.com"""
    with command_errors(), open_client(db_url) as client:
        owner = user_by_email(client, email)
        b = client.credits.balance(owner.id)
        if json:
            print_json(b)
            return
        console.print(
            f"{safe(owner.email)}: {b.total_remaining} credits left ({b.free_expansions_remaining} free, "
            f"{b.paid_credits_remaining} paid); {b.total_expansions_used} used "
            f"({b.total_free_used} free, {b.total_paid_used} paid)"
        )
