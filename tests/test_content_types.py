"""`Output.content` is typed: a discriminated union on `format` (issue 11, "Typed content").

Every format's content goes through a real run (the offline provider) into the database and comes back,
through the Postgres backend and through PostgREST's shape (respx), as its format's model. Stored content
the models cannot hold is an `IdeaExpansionError` naming what is wrong, never a half-typed row."""

from __future__ import annotations

import json
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import TypeAdapter, ValidationError

from idea_expansion import IdeaExpansion, IdeaExpansionError, OutputFormat, Settings, generate_key
from idea_expansion.pipeline import OfflineProvider, Pipeline
from idea_expansion.types import (
    BlogPostContent,
    BlogSection,
    GitHubRepoContent,
    ImageContent,
    Output,
    OutputContent,
    StoredImage,
    TwitterThreadContent,
)

from ._db import Db

CONTENT_CLASS: dict[OutputFormat, type[Any]] = {
    OutputFormat.BLOG_POST: BlogPostContent,
    OutputFormat.TWITTER_THREAD: TwitterThreadContent,
    OutputFormat.GITHUB_REPO: GitHubRepoContent,
    OutputFormat.IMAGE: ImageContent,
}

THREAD = {"format": "twitter_thread", "posts": ["1/3 a", "2/3 b", "3/3 c"], "generated_by": "test"}
IMAGE = {
    "format": "image",
    "prompt": "A lighthouse",
    "caption": "A lighthouse at dusk.",
    "headline": "Lighthouse",
    "image": {
        "storage_path": "u/e/image.png",
        "url": "https://example.test/image.png",
        "width": 1200,
        "height": 630,
        "mime_type": "image/png",
    },
    "generated_by": "test",
}


def test_every_output_format_has_a_content_model() -> None:
    """A format added to the enum (and the outputs.format check) without a content model fails here."""
    members = typing.get_args(typing.get_args(OutputContent)[0])
    assert {model.model_fields["format"].default: model for model in members} == CONTENT_CLASS
    mapping = TypeAdapter(OutputContent).json_schema()["discriminator"]["mapping"]
    assert mapping == {fmt.value: f"#/$defs/{model.__name__}" for fmt, model in CONTENT_CLASS.items()}


# -- through the database, from a real run -----------------------------------------------------------
@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_each_formats_content_round_trips_through_the_database_typed(
    client: IdeaExpansion, db: Db, fmt: OutputFormat
) -> None:
    user = client.users.create(email=f"content-{uuid.uuid4().hex[:10]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", bullets=["offline"]).id
    result = Pipeline(client, provider=OfflineProvider()).expand(user, idea_id=idea, format=fmt)
    assert result.output is not None

    read = client.for_user(user).outputs.get(result.output.id)  # read back, not the object finish returned
    assert type(read.content) is CONTENT_CLASS[fmt]
    assert read.content.format == fmt
    assert read.content == result.output.content == result.content()
    listed = client.for_user(user).outputs.list(format=fmt)
    assert [type(o.content) for o in listed.data] == [CONTENT_CLASS[fmt]]
    # What finish_expansion stored is exactly the model's JSON, discriminator included.
    stored = db.scalar("select content from public.outputs where id = %s", (read.id,))
    assert stored == read.content.model_dump(mode="json")
    assert stored["format"] == fmt.value


def test_typed_content_is_immutable_like_its_row() -> None:
    content = BlogPostContent(
        title="T",
        slug="t",
        sections=[BlogSection(heading="H", paragraphs=["p"])],
        markdown="# T",
        html="<h1>T</h1>",
        meta_description="m",
        tags=[],
        word_count=1,
        reading_time_minutes=1,
        social_post="s",
        generated_by="test",
    )
    with pytest.raises(ValidationError):
        content.title = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        content.sections[0].heading = "changed"  # type: ignore[misc]


# -- stored rows the models cannot hold, and rows written without the discriminator -----------------
@pytest.fixture
def stored_output(db: Db) -> Iterator[Any]:
    """Writes an outputs row as the service role could (bypassing finish_expansion) and returns its owner
    and id. The rows are deleted at the end, so no other test's listing meets them."""
    users: list[uuid.UUID] = []

    def write(row_format: str, content: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID]:
        user = db.create_user()
        users.append(user)
        with db.as_service() as conn:
            execution = conn.execute("insert into public.executions (user_id) values (%s) returning id", (user,))
            execution_id = execution.fetchone()[0]
            output = conn.execute(
                "insert into public.outputs (execution_id, user_id, format, content) values (%s, %s, %s, %s) "
                "returning id",
                (execution_id, user, row_format, json.dumps(content)),
            )
            return user, output.fetchone()[0]

    yield write
    with db.admin() as conn:
        conn.execute("delete from public.outputs where user_id = any(%s)", (users,))


def test_content_without_its_format_reads_as_the_rows_format(client: IdeaExpansion, stored_output: Any) -> None:
    """finish_expansion always stores `format` inside the content; a row written another way may not."""
    without = {k: v for k, v in IMAGE.items() if k != "format"}
    user, output_id = stored_output("image", without)
    output = client.for_user(user).outputs.get(output_id)
    assert isinstance(output.content, ImageContent)
    assert output.content.image == StoredImage.model_validate(IMAGE["image"])


@pytest.mark.parametrize(
    ("row_format", "content", "expected"),
    [
        pytest.param("image", THREAD, "the content is twitter_thread but the output's format is image", id="mismatch"),
        pytest.param(
            "twitter_thread", {**THREAD, "format": "video"}, "does not match any of the expected tags", id="unknown"
        ),
        pytest.param(
            "twitter_thread", {k: v for k, v in THREAD.items() if k != "posts"}, "twitter_thread.posts", id="missing"
        ),
        pytest.param("twitter_thread", {**THREAD, "posts": ["only one"]}, "at least 3 items", id="too-short"),
        pytest.param("twitter_thread", {**THREAD, "likes": 3}, "twitter_thread.likes", id="unknown-field"),
        pytest.param("image", {**IMAGE, "image": {"url": "x"}}, "image.image.storage_path", id="nested"),
    ],
)
def test_content_the_models_cannot_hold_is_a_clear_sdk_error(
    client: IdeaExpansion, stored_output: Any, row_format: str, content: dict[str, Any], expected: str
) -> None:
    user, output_id = stored_output(row_format, content)
    for read in (
        lambda: client.for_user(user).outputs.get(output_id),
        lambda: client.outputs.list(user_id=user),
    ):
        with pytest.raises(IdeaExpansionError) as failure:
            read()
        assert type(failure.value) is IdeaExpansionError  # a row the SDK cannot hold, not a request error
        assert "unexpected Output row from the database" in str(failure.value)
        assert expected in str(failure.value)
        assert isinstance(failure.value.__cause__, ValidationError)


def test_an_output_built_in_python_must_match_its_format() -> None:
    row = {
        "id": uuid.uuid4(),
        "execution_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "idea_id": None,
        "format": OutputFormat.IMAGE,
        "content": TwitterThreadContent.model_validate(THREAD),
        "published": False,
        "publication_url": None,
        "publication_metadata": {},
        "created_at": "2026-11-26T04:48:54+00:00",
        "published_at": None,
    }
    with pytest.raises(ValidationError, match="the content is twitter_thread but the output's format is image"):
        Output.model_validate(row)
    assert isinstance(
        Output.model_validate({**row, "format": OutputFormat.TWITTER_THREAD}).content, TwitterThreadContent
    )
    # An enum member as the row's format also fills in a content written without one.
    without = {k: v for k, v in THREAD.items() if k != "format"}
    filled = Output.model_validate({**row, "format": OutputFormat.TWITTER_THREAD, "content": without})
    assert isinstance(filled.content, TwitterThreadContent)


# -- the REST backend: PostgREST's JSON, typed the same way --------------------------------------------
URL = "https://proj.supabase.co"
USER = uuid.UUID("6e8c61d4-e913-42f4-adb5-e85d2dbe176a")
NOW = "2026-11-26T04:48:54.460630+00:00"


def output_row(row_format: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "execution_id": str(uuid.uuid4()),
        "user_id": str(USER),
        "idea_id": None,
        "format": row_format,
        "content": content,
        "published": False,
        "publication_url": None,
        "publication_metadata": {},
        "created_at": NOW,
        "published_at": None,
    }


@pytest.fixture
def rest_client() -> Iterator[IdeaExpansion]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        SUPABASE_URL=URL,
        SUPABASE_SERVICE_ROLE_KEY="service-role-key",
        SUPABASE_ANON_KEY="anon-key",
        SUPABASE_JWT_SECRET="super-secret-jwt-token-with-at-least-32-characters-long",
        ENCRYPTION_KEY=generate_key(),
    )
    with IdeaExpansion(settings=settings, httpx_client=httpx.Client(timeout=5)) as sdk:
        yield sdk


def test_rest_backend_yields_typed_content(rest_client: IdeaExpansion) -> None:
    thread, image = output_row("twitter_thread", THREAD), output_row("image", IMAGE)
    with respx.mock(base_url=URL, assert_all_called=True) as api:
        api.get("/rest/v1/outputs").mock(
            side_effect=[httpx.Response(200, json=[thread]), httpx.Response(200, json=[image, thread])]
        )
        got = rest_client.outputs.get(thread["id"])
        assert got.content == TwitterThreadContent.model_validate(THREAD)
        listed = rest_client.outputs.list(user_id=USER)
        assert [type(o.content) for o in listed.data] == [ImageContent, TwitterThreadContent]


def test_rest_backend_refuses_content_of_another_format(rest_client: IdeaExpansion) -> None:
    with respx.mock(base_url=URL, assert_all_called=True) as api:
        api.get("/rest/v1/outputs").mock(return_value=httpx.Response(200, json=[output_row("blog_post", THREAD)]))
        with pytest.raises(
            IdeaExpansionError, match="the content is twitter_thread but the output's format is blog_post"
        ):
            rest_client.outputs.get(uuid.uuid4())
