"""The run record (model_usage migration): every model call with its provider, model and tokens, their sums
and cost; the fallback rule (a run that fell back to the offline templates is partial, never charged, never
delivered); plan, review and at most one revision; the image modes; and the worst case per credit."""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from idea_expansion import (
    ConfigurationError,
    ConflictError,
    IdeaExpansion,
    InvalidRequestError,
    NotFoundError,
)
from idea_expansion.pipeline import FallbackProvider, OfflineProvider, Pipeline
from idea_expansion.pipeline.budget import call_ceiling, worst_case_tokens_per_credit
from idea_expansion.pipeline.content import BlogPostContent, ImageContent, PlanDraft, ReviewVerdict
from idea_expansion.pipeline.pricing import PriceTable
from idea_expansion.pipeline.prompts import instructions_ceiling
from idea_expansion.pipeline.providers import Completion, IdeaBrief, ProviderError, Task
from idea_expansion.types import ExecutionStatus, OutputFormat
from idea_expansion.types.expansions import ExpansionOutcome
from idea_expansion.types.rows import ModelCall

from ._db import Db

T = TypeVar("T", bound=BaseModel)
README = Path(__file__).resolve().parents[1] / "README.md"
DENIED = "42501"


@dataclass
class ScriptedProvider:
    """A model that answers with the offline templates' content but as "openai" model `scripted-1`, with
    fixed usage per call, and reviews with the scores it is given in turn (the last one repeating)."""

    scores: list[int] = field(default_factory=lambda: [90])
    name: str = "scripted"
    model: str = "scripted-1"
    calls: list[tuple[Task, str]] = field(default_factory=list)
    plan: PlanDraft | None = None
    _offline: OfflineProvider = field(default_factory=OfflineProvider)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        with self._lock:
            self.calls.append((task, instructions))
            reviews = sum(1 for t, _ in self.calls if t == "review")
        value: Any
        if task == "review":
            score = self.scores[min(reviews, len(self.scores)) - 1]
            value = ReviewVerdict(score=score, feedback=[f"Make point {reviews} concrete.", "Cut the filler."])
        elif task == "plan" and self.plan is not None:
            value = self.plan
        else:
            value = self._offline.generate(task, schema, idea=idea, instructions=instructions).value
        return Completion(value, 100 + len(self.calls), 10, self.model, provider="openai")


class Broken:
    """A model provider that is down."""

    name = "openai"

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        raise ProviderError("OpenAI request failed: Connection refused")


def new_user(client: IdeaExpansion) -> uuid.UUID:
    return client.users.create(email=f"rec-{uuid.uuid4().hex[:10]}@example.test").id


def new_idea(client: IdeaExpansion, user: uuid.UUID, title: str = "Explain regular expressions") -> uuid.UUID:
    return client.ideas.create(
        user_id=user,
        title=title,
        description="Paste a pattern and read what it matches, in plain words.",
        bullets=["works offline", "colour output"],
    ).id


def balance(client: IdeaExpansion, user: uuid.UUID) -> tuple[int, int, int]:
    usage = client.credits.balance(user)
    return usage.free_expansions_remaining, usage.paid_credits_remaining, usage.total_expansions_used


PRICES = PriceTable.from_mapping({"scripted-1": {"input_per_million": "2.50", "output_per_million": "10"}})


# -- the record ---------------------------------------------------------------------------------------------
def test_a_model_run_records_every_call_its_sums_and_cost(client: IdeaExpansion) -> None:
    user = new_user(client)
    provider = ScriptedProvider(scores=[88])
    with Pipeline(client, provider=provider, prices=PRICES) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    execution = client.executions.get(result.execution.id)  # read back from the database
    assert execution.status == ExecutionStatus.COMPLETED
    assert [(c.stage, c.task, c.provider, c.model) for c in execution.model_calls] == [
        ("judge", "judge", "openai", "scripted-1"),
        ("generate", "plan", "openai", "scripted-1"),
        ("generate", "blog_post", "openai", "scripted-1"),
        ("generate", "review", "openai", "scripted-1"),
        ("image", "image", "offline", "title-card"),  # the title card: recorded, free, not a model
    ]
    assert [(c.input_tokens, c.output_tokens) for c in execution.model_calls] == [
        (101, 10),
        (102, 10),
        (103, 10),
        (104, 10),
        (0, 0),
    ]
    assert (execution.input_tokens, execution.output_tokens, execution.tokens_used) == (410, 40, 450)
    assert execution.generation == "model"
    assert execution.charged is True
    assert execution.review_score == 88
    assert not any(c.fallback for c in execution.model_calls)
    # 410 input tokens at $2.50 and 40 output at $10 per million
    assert execution.cost_usd == Decimal("0.001425")
    assert balance(client, user) == (4, 0, 1)
    content = result.content()
    assert isinstance(content, BlogPostContent)
    assert content.generated_by == "openai:scripted-1"
    assert content.cover_image is not None


def test_an_unpriced_model_records_no_cost_and_no_table_records_none(client: IdeaExpansion) -> None:
    user = new_user(client)
    other = PriceTable.from_mapping({"gpt-4o-mini": {"input_per_million": 1, "output_per_million": 1}})
    with Pipeline(client, provider=ScriptedProvider(), prices=other) as pipeline:
        priced_elsewhere = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    with Pipeline(client, provider=ScriptedProvider()) as pipeline:
        no_table = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    with Pipeline(client, provider=OfflineProvider(), prices=other) as pipeline:
        offline = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    assert priced_elsewhere.execution.cost_usd is None
    assert no_table.execution.cost_usd is None
    assert offline.execution.cost_usd == Decimal(0)  # the templates cost nothing
    assert offline.execution.generation == "offline"
    assert offline.execution.charged is True  # an offline run is charged as before


# -- plan, review, one revision -----------------------------------------------------------------------------
def test_a_low_review_gets_exactly_one_revision_and_the_second_score_is_recorded(client: IdeaExpansion) -> None:
    user = new_user(client)
    provider = ScriptedProvider(scores=[40, 55])  # both below the threshold of 70
    with Pipeline(client, provider=provider) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="github_repo")
    tasks = [task for task, _ in provider.calls]
    assert tasks == ["judge", "plan", "github_repo", "review", "github_repo", "review"]
    first_draft, revision = (text for task, text in provider.calls if task == "github_repo")
    assert "Follow this plan:" in first_draft
    assert "scored the previous draft" not in first_draft
    assert "Follow this plan:" in revision
    assert "scored the previous draft 40/100" in revision
    assert "Make point 1 concrete." in revision
    review = next(text for task, text in provider.calls if task == "review")
    assert "correctness" in review
    assert "The draft:" in review
    assert "--- main.py ---" in review
    assert result.execution.review_score == 55
    assert [c.task for c in client.executions.get(result.execution.id).model_calls] == tasks


@pytest.mark.parametrize(
    ("scores", "threshold", "drafts", "recorded"), [([90], 70, 1, 90), ([40, 95], 70, 2, 95), ([40], 30, 1, 40)]
)
def test_revision_follows_the_threshold(
    client: IdeaExpansion, scores: list[int], threshold: int, drafts: int, recorded: int
) -> None:
    user = new_user(client)
    provider = ScriptedProvider(scores=scores)
    with Pipeline(client, provider=provider, review_threshold=threshold) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    assert [task for task, _ in provider.calls].count("blog_post") == drafts
    assert [task for task, _ in provider.calls].count("review") == drafts
    assert result.execution.review_score == recorded


def test_the_offline_templates_never_review_or_revise(client: IdeaExpansion) -> None:
    user = new_user(client)
    with Pipeline(client, provider=OfflineProvider(), review_threshold=100) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    assert [c.task for c in result.execution.model_calls] == ["judge", "plan", "blog_post", "review", "image"]
    assert result.execution.review_score is None  # no model reviewed it
    assert result.execution.generation == "offline"
    assert result.execution.status == ExecutionStatus.COMPLETED


def test_carried_text_is_clipped_to_each_prompts_ceiling(client: IdeaExpansion) -> None:
    user = new_user(client)
    longest = PlanDraft(approach="é" * 600, outline=["ü" * 300] * 12)
    provider = ScriptedProvider(scores=[0, 0], plan=longest)
    with Pipeline(client, provider=provider) as pipeline:
        pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    for task, instructions in provider.calls:
        assert len(instructions) <= instructions_ceiling(task), task
        assert len(instructions.encode()) <= call_ceiling(task).input_tokens, task


def test_the_readme_states_the_computed_worst_case_per_credit() -> None:
    stated = re.search(r"at most \*\*([0-9,]+) tokens\*\* per\s+credit", README.read_text())
    assert stated is not None
    assert int(stated.group(1).replace(",", "")) == worst_case_tokens_per_credit()


# -- the fallback rule -----------------------------------------------------------------------------------------
def _charges(db: Db, user: uuid.UUID) -> list[tuple[str, str]]:
    with db.admin() as conn:
        rows = conn.execute(
            "select c.status, c.credit_type from public.credit_charges c where c.user_id = %s", (user,)
        ).fetchall()
    return [(str(status), str(kind)) for status, kind in rows]


def test_a_fallback_run_is_partial_not_charged_and_not_delivered(client: IdeaExpansion, db: Db) -> None:
    user = new_user(client)
    before = balance(client, user)
    provider = FallbackProvider([Broken(), OfflineProvider()])
    with Pipeline(client, provider=provider, prices=PRICES) as pipeline:
        blog = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post", public=True)
        image = pipeline.expand(user, idea_id=new_idea(client, user, "A poster"), format="image", public=True)
        for result in (blog, image):
            execution = client.executions.get(result.execution.id)
            assert execution.status == ExecutionStatus.PARTIAL
            assert execution.generation == "fallback"
            assert execution.charged is False
            assert execution.error_step == "judge"  # the first stage that fell back
            message = execution.error_message or ""
            assert "Connection refused" in message
            assert "not charged" in message
            judge = execution.model_calls[0]
            assert (judge.provider, judge.fallback) == ("offline", True)
            assert judge.fallback_errors == ["openai: OpenAI request failed: Connection refused"]
            assert result.output is not None  # kept for its owner
            # nothing delivered, and nothing can be
            with pytest.raises(ConflictError, match="not charged"):
                pipeline.deliver(result.output.id)
            with pytest.raises(ConflictError, match="not charged"):
                client.expansions.record_delivery(execution.id, "image", error_message="try to make it partial")
        assert blog.blog_post is not None
        assert blog.blog_post.is_public is False  # private, though the run asked for public
        blog_content = blog.content()
        assert isinstance(blog_content, BlogPostContent)
        assert blog_content.cover_image is None  # no cover uploaded to the public bucket
        image_content = image.content()
        assert isinstance(image_content, ImageContent)
        with pytest.raises(NotFoundError):
            client.storage.download(image_content.image.storage_path)
    assert balance(client, user) == before  # both credits released
    assert sorted(_charges(db, user)) == [("released", "free"), ("released", "free")]


def test_the_database_refuses_to_complete_or_charge_a_fallback_run(client: IdeaExpansion, db: Db) -> None:
    user = new_user(client)
    started = client.expansions.start(user, idea_id=new_idea(client, user), format="twitter_thread")
    fell_back = ModelCall(
        stage="judge",
        task="judge",
        provider="offline",
        model="offline-templates",
        fallback=True,
        fallback_errors=["openai: down"],
    )
    thread = {"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "offline"}
    with pytest.raises(ValueError, match="partial"):  # the SDK refuses it first
        ExpansionOutcome(status="completed", model_calls=[fell_back], content=thread)  # type: ignore[arg-type]
    # ... and the database, whoever calls it
    with db.as_service() as conn, pytest.raises(psycopg.errors.InvalidParameterValue, match="ends partial"):
        conn.execute(
            "select public.finish_expansion(%s, 'completed', p_format_chosen => 'twitter_thread', p_content => %s, "
            "p_model_calls => %s)",
            (started.execution.id, Jsonb(thread), Jsonb([fell_back.model_dump(exclude_none=True)])),
        )
    # A service-role writer going around finish: the trigger refuses a delivered fallback run without a release.
    with db.as_service() as conn, pytest.raises(psycopg.Error, match="credit captured") as refused:
        conn.execute(
            "update public.executions set status = 'partial', generation = 'fallback', current_stage = 'done', "
            "completed_at = now(), error_step = 'judge', error_message = 'x' where id = %s",
            (started.execution.id,),
        )
    assert refused.value.sqlstate == "PT409"
    assert balance(client, user)[2] == 0
    with db.as_service() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "update public.executions set model_calls = %s where id = %s",
            (Jsonb([{"stage": "x"}]), started.execution.id),
        )


def test_model_calls_are_bounded(client: IdeaExpansion, db: Db) -> None:
    user = new_user(client)
    started = client.expansions.start(user, idea_id=new_idea(client, user), format="twitter_thread")
    call = {"stage": "judge", "task": "judge", "provider": "openai", "model": "m", "input_tokens": 1,
            "output_tokens": 1, "fallback": False}  # fmt: skip
    for bad in (
        [call] * 65,
        [call | {"model": "m" * 201}],
        [call | {"task": "steal"}],
        [call | {"input_tokens": -1}],
        [call | {"extra": "x"}],
        [call | {"fallback": True}],  # a fallback answered by a model, with no errors
        [call | {"provider": "offline", "fallback": True, "fallback_errors": ["e" * 501]}],
    ):
        with db.as_service() as conn, pytest.raises(psycopg.errors.InvalidParameterValue, match="model_calls"):
            conn.execute(
                "select public.finish_expansion(%s, 'failed', p_error_step => 'judge', p_error_message => 'x', "
                "p_model_calls => %s)",
                (started.execution.id, Jsonb(bad)),
            )
    with pytest.raises(ValueError, match="model"):  # the SDK's model refuses them before a round trip
        ModelCall(stage="judge", task="judge", provider="openai", model="m" * 201)


# -- users cannot write the record --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("charged", "true"),
        ("generation", "'model'"),
        ("model_calls", "'[]'::jsonb"),
        ("input_tokens", "0"),
        ("output_tokens", "0"),
        ("cost_usd", "0"),
        ("review_score", "100"),
    ],
)
def test_a_user_cannot_write_the_record(client: IdeaExpansion, db: Db, column: str, value: str) -> None:
    user = new_user(client)
    with Pipeline(client, provider=FallbackProvider([Broken(), OfflineProvider()])) as pipeline:
        run = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    with db.as_user(user) as conn:  # they read their own record
        assert conn.execute(
            "select charged, generation from public.executions where id = %s", (run.execution.id,)
        ).fetchone() == (False, "fallback")
    with db.as_user(user) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
        conn.execute(f"update public.executions set {column} = {value} where id = %s", (run.execution.id,))
    assert denied.value.sqlstate == DENIED
    with db.as_user(user) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select public.record_expansion_delivery(%s, 'image', 'x')", (run.execution.id,))
    assert client.executions.get(run.execution.id).charged is False


# -- image modes and the storage gate --------------------------------------------------------------------------
def test_image_mode_none_refuses_image_runs_before_a_credit_and_makes_no_cover(client: IdeaExpansion) -> None:
    user = new_user(client)
    with Pipeline(client, provider=OfflineProvider(), image_mode="none") as pipeline:
        assert pipeline.images_available is False
        for call in (pipeline.expand, pipeline.enqueue):
            with pytest.raises(ConfigurationError, match="image"):
                call(user, idea_id=new_idea(client, user), format="image")
        assert list(client.executions.list(user_id=user)) == []
        assert balance(client, user) == (5, 0, 0)
        blog = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
        # a visual idea: the chooser is not offered images
        chosen = pipeline.expand(user, idea_id=new_idea(client, user, "A poster design for a logo"))
    assert blog.status == ExecutionStatus.COMPLETED
    content = blog.content()
    assert isinstance(content, BlogPostContent)
    assert content.cover_image is None
    assert "image" not in [c.task for c in blog.execution.model_calls]
    assert chosen.execution.format_chosen == OutputFormat.BLOG_POST


def test_image_mode_and_renderer_must_agree(client: IdeaExpansion) -> None:
    with pytest.raises(ConfigurationError, match="image_renderer"):
        Pipeline(client, image_mode="model")
    with pytest.raises(ConfigurationError, match="image_renderer"):
        Pipeline(client, image_mode="card", image_renderer=lambda draft: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidRequestError, match="review_threshold"):
        Pipeline(client, review_threshold=101)


def test_worker_processes_carry_the_image_mode_prices_and_threshold(client: IdeaExpansion) -> None:
    with Pipeline(client, provider=OfflineProvider(), image_mode="none", prices=PRICES, review_threshold=55) as parent:
        recipe = parent._worker_recipe()
    with recipe.build(client) as child:
        assert (child.image_mode, child.review_threshold) == ("none", 55)
        assert child.prices is not None
        assert child.prices.cost("scripted-1", 1_000_000, 0) == Decimal("2.50")


def test_the_async_pipeline_refuses_image_runs_where_images_are_off(
    database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    import asyncio

    from idea_expansion import AsyncIdeaExpansion, Settings
    from idea_expansion.pipeline import AsyncPipeline

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=encryption_key, IDEA_EXPANSION_IMAGE_MODE="none"
    )

    async def scenario() -> None:
        async with (
            AsyncIdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client,
            AsyncPipeline(client, provider=OfflineProvider()) as pipeline,
        ):
            user = await client.users.create(email=f"async-{uuid.uuid4().hex[:8]}@example.test")
            idea = await client.for_user(user.id).ideas.create(title="A poster")
            for call in (pipeline.enqueue, pipeline.expand):
                with pytest.raises(ConfigurationError, match="image"):
                    await call(user.id, idea_id=idea.id, format="image")
            balance = await client.credits.balance(user.id)
            assert (balance.free_expansions_remaining, balance.total_expansions_used) == (5, 0)

    asyncio.run(scenario())


def test_nobody_can_make_the_post_of_an_uncharged_run_public(client: IdeaExpansion, db: Db) -> None:
    """The owner's column grant on is_public (and the service client) cannot publish a fallback run's
    post: it was never charged. A charged run's post is published as before."""
    user = new_user(client)
    with Pipeline(client, provider=FallbackProvider([Broken(), OfflineProvider()])) as pipeline:
        fallback = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    with Pipeline(client, provider=OfflineProvider()) as pipeline:
        charged = pipeline.expand(user, idea_id=new_idea(client, user, "Charged"), format="blog_post")
    assert fallback.blog_post is not None
    assert charged.blog_post is not None
    owner = client.for_user(user)
    for sdk in (owner, client):
        with pytest.raises(ConflictError, match="not charged"):
            sdk.blog_posts.update(fallback.blog_post.id, is_public=True)
    with db.as_user(user) as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute("update public.blog_posts set is_public = true where id = %s", (fallback.blog_post.id,))
    assert refused.value.sqlstate == "PT409"
    assert client.blog_posts.get(fallback.blog_post.id).is_public is False
    # Everything else about the post stays the owner's to change, and a charged post publishes.
    assert owner.blog_posts.update(fallback.blog_post.id, title="Renamed").title == "Renamed"
    assert owner.blog_posts.update(charged.blog_post.id, is_public=True).is_public is True
