"""The run record (model_usage migration): every model call with its provider, model and tokens, their sums
and cost; the fallback rule (a run that fell back to the offline templates is partial, never charged, never
delivered); plan, review and at most one revision; the image modes; and the worst case per credit."""

from __future__ import annotations

import base64
import re
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
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
    PipelineError,
)
from idea_expansion.pipeline import FallbackProvider, OfflineProvider, OpenAIProvider, Pipeline
from idea_expansion.pipeline.budget import call_ceiling, worst_case_tokens_per_credit
from idea_expansion.pipeline.content import (
    BlogPostContent,
    ImageContent,
    ImageDraft,
    PlanDraft,
    ReviewVerdict,
    ThreadDraft,
)
from idea_expansion.pipeline.formats import build_thread, render_title_card
from idea_expansion.pipeline.pricing import PriceTable
from idea_expansion.pipeline.prompts import instructions_ceiling
from idea_expansion.pipeline.providers import Completion, FailedCall, IdeaBrief, ProviderError, Task
from idea_expansion.pipeline.providers.base import RenderedImage
from idea_expansion.types import ExecutionStatus, OutputFormat
from idea_expansion.types.expansions import ExpansionOutcome
from idea_expansion.types.rows import ModelCall

from ._db import Db
from ._model_server import BLOG_RUN_ANSWERS, ModelServer, Refuse, task_of

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
    """The longest plan, a draft far over what a review carries and feedback over what a revision carries,
    through a real OpenAI-compatible server: every request body the server received stays under its
    call's ceiling, with the carried text clipped (plan, draft under review, feedback)."""
    user = new_user(client)
    answers: dict[str, dict[str, Any]] = {
        "judge": {"score": 80, "reasoning": "Concrete."},
        "plan": {"approach": "é" * 600, "outline": ["ü" * 300] * 12},
        "blog_post": {
            "title": "T" * 200,
            "sections": [{"heading": "H" * 120, "paragraphs": ["ß" * 2_000] * 12}] * 10,  # 240,000 characters
            "tags": ["t"],
            "meta_description": "m",
            "social_post": "s",
        },
        "review": {"score": 0, "feedback": ["ö" * 400] * 8},  # 3,200 characters of feedback
    }
    with ModelServer(lambda task, request: answers[task], usage={"prompt_tokens": 1, "completion_tokens": 1}) as server:
        provider = OpenAIProvider(base_url=server.base_url, model="m", max_retries=0)
        with Pipeline(client, provider=provider, image_mode="none") as pipeline:
            pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    bodies = [request["body"] for request in server.requests]
    tasks = [task_of(body) for body in bodies]
    assert tasks == ["judge", "plan", "blog_post", "review", "blog_post", "review"]
    for task, body in zip(tasks, bodies, strict=True):
        prompt = sum(len(str(message["content"]).encode()) for message in body["messages"])
        assert prompt <= call_ceiling(task).input_tokens, task  # type: ignore[arg-type]
        user_text = next(m["content"] for m in body["messages"] if m["role"] == "user")
        assert len(user_text) <= len(f"Task: {task}\n\n\nThe idea:\n") + instructions_ceiling(task) + 11_403, task  # type: ignore[arg-type]
    review = next(m["content"] for m in bodies[3]["messages"] if m["role"] == "user")
    assert "ß" * 2_000 in review
    assert review.count("ß") < 16_000  # the draft under review, clipped
    revision = next(m["content"] for m in bodies[4]["messages"] if m["role"] == "user")
    assert 0 < revision.count("ö") < 3_000  # the feedback, clipped
    assert revision.count("ü") <= 4_000  # the plan, clipped


def test_the_readme_states_the_computed_worst_case_per_credit() -> None:
    stated = re.search(r"at most \*\*([0-9,]+) tokens\*\* per\s+credit", README.read_text())
    assert stated is not None
    assert int(stated.group(1).replace(",", "")) == worst_case_tokens_per_credit()
    # per model provider: a chain of two may spend twice as much (each call failing on the first after its ceiling)
    assert worst_case_tokens_per_credit(model_providers=2) == 2 * worst_case_tokens_per_credit()
    chained = re.search(r"`worst_case_tokens_per_credit\(model_providers=2\)`: ([0-9,]+)\)", README.read_text())
    assert chained is not None
    assert int(chained.group(1).replace(",", "")) == worst_case_tokens_per_credit(model_providers=2)
    assert "times the number of model" in " ".join(README.read_text().split())
    assert "retried after a timeout can be billed again" in " ".join(README.read_text().split())
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="model_providers"):
            worst_case_tokens_per_credit(model_providers=bad)  # type: ignore[arg-type]


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
            assert execution.error_step == "generate"  # the stage whose content the templates wrote
            message = execution.error_message or ""
            assert "Connection refused" in message
            assert "not charged" in message
            judge = execution.model_calls[0]  # answered offline too: recorded with why, but no fallback
            assert (judge.task, judge.provider, judge.fallback) == ("judge", "offline", False)
            assert judge.fallback_errors == ["openai: OpenAI request failed: Connection refused"]
            drafts = [c for c in execution.model_calls if c.fallback]
            assert [(c.stage, c.task) for c in drafts] == [("generate", result.execution.format_chosen)]
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
        stage="generate",
        task="twitter_thread",
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
        [call | {"failed": "yes"}],
        [call | {"failed": True, "error": "e" * 501}],
        [call | {"failed": True, "error": 5}],
        [call | {"usage_reported": "no"}],
        [call | {"provider": "offline", "fallback": True, "fallback_errors": ["x"], "failed": True}],  # never both
        [call | {"provider": "offline", "fallback": True, "fallback_errors": ["x"]}],  # a judge is never a fallback
        [
            call
            | {"stage": "generate", "task": "plan", "provider": "offline", "fallback": True, "fallback_errors": ["x"]}
        ],
    ):
        with db.as_service() as conn, pytest.raises(psycopg.errors.InvalidParameterValue, match="model_calls"):
            conn.execute(
                "select public.finish_expansion(%s, 'failed', p_error_step => 'judge', p_error_message => 'x', "
                "p_model_calls => %s)",
                (started.execution.id, Jsonb(bad)),
            )
    with pytest.raises(ValueError, match="model"):  # the SDK's model refuses them before a round trip
        ModelCall(stage="judge", task="judge", provider="openai", model="m" * 201)
    with pytest.raises(ValueError, match="error"):
        ModelCall(stage="judge", task="judge", provider="openai", model="m", failed=True, error="e" * 501)


def test_failed_calls_count_in_the_sums_but_not_in_the_generation(client: IdeaExpansion, db: Db) -> None:
    """finish_expansion sums every call, failed ones too, and derives the generation from the answers: a
    failed model call beside offline answers is no model run (and no fallback: it answered nothing)."""
    user = new_user(client)
    thread = OfflineProvider().generate(
        "twitter_thread", ThreadDraft, idea=IdeaBrief("t", "d", (), ()), instructions=""
    )
    content = build_thread(thread.value, generated_by="offline")
    failed = {"stage": "judge", "task": "judge", "provider": "openai", "model": "m", "input_tokens": 40,
              "output_tokens": 2, "fallback": False, "failed": True, "error": "cut",
              "usage_reported": True}  # fmt: skip
    answered = failed | {"provider": "offline", "failed": False, "input_tokens": 0, "output_tokens": 0}
    answered.pop("error")
    started = client.expansions.start(user, idea_id=new_idea(client, user), format="twitter_thread")
    with db.as_service() as conn:
        conn.execute(
            "select public.finish_expansion(%s, 'completed', p_format_chosen => 'twitter_thread', p_content => %s, "
            "p_model_calls => %s)",
            (started.execution.id, Jsonb(content.model_dump(mode="json")), Jsonb([failed, answered])),
        )
    execution = client.executions.get(started.execution.id)
    assert (execution.input_tokens, execution.output_tokens, execution.tokens_used) == (40, 2, 42)
    assert execution.generation == "offline"
    assert [c.failed for c in execution.model_calls] == [True, False]
    assert execution.model_calls[0].error == "cut"


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


def test_worker_processes_built_from_settings_run_with_their_prices_and_image_mode(
    own_database: str, encryption_key: str, tmp_path: Path
) -> None:
    """Two real worker processes, each rebuilding the pipeline from the settings: the runs they store carry
    the price table's cost (0 for the offline templates; None had the table been lost) and no cover image
    (IDEA_EXPANSION_IMAGE_MODE=none)."""
    from idea_expansion import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        DATABASE_URL=own_database,
        ENCRYPTION_KEY=encryption_key,
        IDEA_EXPANSION_PROVIDER="offline",
        IDEA_EXPANSION_IMAGE_MODE="none",
        IDEA_EXPANSION_PRICES='{"scripted-1": {"input_per_million": "2.50", "output_per_million": "10"}}',
    )
    with (
        IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as service,
        Pipeline.from_settings(service) as pipeline,
    ):
        user = new_user(service)
        queued = [
            pipeline.enqueue(user, idea_id=new_idea(service, user, f"Idea {n}"), format="blog_post").id
            for n in range(4)
        ]
        assert pipeline.run_worker(concurrency=2, exit_when_idle=True) == 4
        runs = [service.executions.get(run) for run in queued]
        assert {run.status for run in runs} == {ExecutionStatus.COMPLETED}
        assert len({run.worker_id.split("/")[0] for run in runs if run.worker_id}) >= 1
        assert all(run.cost_usd == Decimal(0) for run in runs)  # priced (the templates are free), not None
        for run in runs:
            assert "image" not in [call.task for call in run.model_calls]
            (output,) = service.outputs.list(execution_id=run.id)
            content = output.content
            assert isinstance(content, BlogPostContent)
            assert content.cover_image is None


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


# -- round 2: heartbeats, failed calls, usage, fallback images, delivery ---------------------------------------
@dataclass
class Failing:
    """A model provider whose calls fail after spending tokens (an answer cut at the output cap), `times`
    times per task (None: always), then answer as `then` does."""

    name: str = "openai"
    model: str = "scripted-1"
    times: int | None = None
    then: ScriptedProvider | None = None
    failures: list[Task] = field(default_factory=list)

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        if self.times is None or self.failures.count(task) < self.times:
            self.failures.append(task)
            failed = FailedCall(self.name, self.model, 700, 4096, "the answer was cut at the output cap", True)
            raise ProviderError(f"{self.name}: the answer was cut at the output cap", failed_calls=(failed,))
        assert self.then is not None
        return self.then.generate(task, schema, idea=idea, instructions=instructions)


def test_a_heartbeat_goes_before_every_model_call_and_image_render(client: IdeaExpansion, monkeypatch: Any) -> None:
    """With heartbeat_every=0 the run reports its stage before each call and render, not only at a stage
    boundary: a revision round (plan, draft, review, draft, review) in one stage never goes quiet."""
    user = new_user(client)
    events: list[str] = []
    record_stage = client.expansions.record_stage

    def beating(execution_id: Any, stage: Any) -> Any:  # the real call, counted
        events.append("beat")
        return record_stage(execution_id, stage)

    class Counted(ScriptedProvider):
        def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
            events.append(f"call {task}")
            return super().generate(task, schema, idea=idea, instructions=instructions)

    def render(draft: ImageDraft) -> RenderedImage:
        events.append("render")
        return RenderedImage(b"\x89PNG\r\n\x1a\n" + b"0" * 64, 1536, 1024, "openai", "gpt-image-1")

    monkeypatch.setattr(client.expansions, "record_stage", beating)
    with Pipeline(
        client, provider=Counted(scores=[40, 90]), image_renderer=render, heartbeat_every=timedelta(0)
    ) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
    work = [i for i, event in enumerate(events) if event != "beat"]
    assert [events[i] for i in work] == [
        "call judge", "call plan", "call blog_post", "call review", "call blog_post", "call review", "render",
    ]  # fmt: skip
    assert all(events[i - 1] == "beat" for i in work), events
    assert events.count("beat") >= len(work)
    # The database saw each: the heartbeat moved the run's stage to generate before the revision's calls.
    assert client.executions.get(result.execution.id).current_stage == "done"


def test_failed_calls_count_in_the_sums_and_cost_and_fallback_errors_stay(client: IdeaExpansion) -> None:
    """A model failing after it spent tokens, then another model answering: the failed call is recorded
    (failed, its error, its tokens) and counts in the sums and the cost; the answer keeps why the first
    failed (fallback_errors) though it did not fall back; the run is a model run, completed and charged."""
    user = new_user(client)
    chain = FallbackProvider([Failing(times=1), ScriptedProvider(name="second")])
    with Pipeline(client, provider=chain, prices=PRICES) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    execution = client.executions.get(result.execution.id)
    calls = execution.model_calls
    assert [(c.task, c.provider, c.failed) for c in calls] == [
        ("judge", "openai", True), ("judge", "openai", False),
        ("twitter_thread", "openai", True), ("twitter_thread", "openai", False),
    ]  # fmt: skip
    failed = calls[0]
    assert (failed.input_tokens, failed.output_tokens, failed.error) == (
        700,
        4096,
        "the answer was cut at the output cap",
    )
    assert failed.fallback is False
    assert calls[1].fallback is False
    assert calls[1].fallback_errors == ["openai: openai: the answer was cut at the output cap"]
    assert execution.input_tokens == 700 + 101 + 700 + 102
    assert execution.output_tokens == 4096 + 10 + 4096 + 10
    assert execution.tokens_used == execution.input_tokens + execution.output_tokens
    # every token at $2.50 in and $10 out per million, the failed ones too
    expected = (Decimal(execution.input_tokens) * Decimal("2.50") + Decimal(execution.output_tokens) * 10) / 10**6
    assert execution.cost_usd == expected.quantize(Decimal("0.000001"))
    assert (execution.status, execution.generation, execution.charged) == (ExecutionStatus.COMPLETED, "model", True)


def test_a_failed_run_records_the_calls_that_failed(client: IdeaExpansion) -> None:
    user = new_user(client)
    chain = FallbackProvider([Failing(), Failing(name="anthropic", model="claude-x")])
    prices = PriceTable.from_mapping(
        {
            "scripted-1": {"input_per_million": "2.50", "output_per_million": "10"},
            "claude-x": {"input_per_million": "3", "output_per_million": "15"},
        }
    )
    with Pipeline(client, provider=chain, prices=prices) as pipeline, pytest.raises(PipelineError):
        pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    (execution,) = client.executions.list(user_id=user)
    assert execution.status == ExecutionStatus.FAILED
    assert [(c.task, c.provider, c.model, c.failed) for c in execution.model_calls] == [
        ("judge", "openai", "scripted-1", True),
        ("judge", "anthropic", "claude-x", True),
    ]
    assert (execution.input_tokens, execution.output_tokens) == (1400, 8192)
    assert execution.cost_usd == Decimal("0.106250")  # 700*2.5 + 4096*10 + 700*3 + 4096*15, per million
    assert execution.charged is False
    assert balance(client, user) == (5, 0, 0)


def test_no_cost_when_a_model_reported_no_usage(client: IdeaExpansion) -> None:
    @dataclass
    class Unmetered(ScriptedProvider):
        def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
            done = super().generate(task, schema, idea=idea, instructions=instructions)
            return replace(done, input_tokens=0, output_tokens=0, usage_reported=task != "twitter_thread")

    user = new_user(client)
    with Pipeline(client, provider=Unmetered(), prices=PRICES) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    execution = client.executions.get(result.execution.id)
    assert [c.usage_reported for c in execution.model_calls] == [True, False]
    assert execution.cost_usd is None  # not 0: what the thread cost is unknown


def test_the_answering_providers_name_fills_a_completion_that_names_none(client: IdeaExpansion) -> None:
    @dataclass
    class Unnamed(ScriptedProvider):
        def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
            return replace(super().generate(task, schema, idea=idea, instructions=instructions), provider="")

    user = new_user(client)
    with Pipeline(client, provider=Unnamed(name="local-llm")) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user), format="twitter_thread")
    assert {c.provider for c in client.executions.get(result.execution.id).model_calls} == {"local-llm"}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_a_fallback_image_run_renders_the_title_card_and_points_at_no_missing_object(client: IdeaExpansion) -> None:
    user = new_user(client)
    rendered: list[ImageDraft] = []

    def paid(draft: ImageDraft) -> RenderedImage:
        rendered.append(draft)
        raise AssertionError("a fallback run must not call the paid image model")

    chain = FallbackProvider([Broken(), OfflineProvider()])
    with Pipeline(client, provider=chain, image_renderer=paid) as pipeline:
        result = pipeline.expand(user, idea_id=new_idea(client, user, "A poster"), format="image")
    assert rendered == []
    assert (result.execution.status, result.execution.charged) == (ExecutionStatus.PARTIAL, False)
    content = result.content()
    assert isinstance(content, ImageContent)
    image = content.image
    # Nothing uploaded; the card is kept in the output itself, and its URL holds it.
    with pytest.raises(NotFoundError):
        client.storage.download(image.storage_path)
    assert image.url.startswith("data:image/png;base64,")
    card = base64.b64decode(image.url.removeprefix("data:image/png;base64,"))
    assert _png_size(card) == (image.width, image.height) == (1200, 630)
    assert [(c.provider, c.model) for c in result.execution.model_calls if c.stage == "image"] == [
        ("offline", "title-card")
    ]


def test_deliver_redraws_a_lost_image_with_the_renderer_that_made_it(client: IdeaExpansion) -> None:
    user = new_user(client)
    model_draws: list[ImageDraft] = []
    size = {"width": 1536, "height": 1024}

    def model(draft: ImageDraft) -> RenderedImage:
        model_draws.append(draft)
        picture = render_title_card(draft.headline, draft.caption)  # any PNG will do as the model's picture
        return RenderedImage(picture, size["width"], size["height"], "openai", "gpt-image-1")

    with Pipeline(client, provider=ScriptedProvider(), image_renderer=model) as modelled:
        by_model = modelled.expand(user, idea_id=new_idea(client, user, "A poster"), format="image")
    with Pipeline(client, provider=ScriptedProvider()) as carded:
        by_card = carded.expand(user, idea_id=new_idea(client, user, "A card"), format="image")
    assert by_model.output is not None
    assert by_card.output is not None
    model_image, card_image = (
        content.image for content in (by_model.content(), by_card.content()) if isinstance(content, ImageContent)
    )
    assert (model_image.width, card_image.width) == (1536, 1200)
    client.storage.remove(model_image.storage_path, card_image.storage_path)
    drawn = len(model_draws)

    # A title card is redrawn as a title card, even by a pipeline with an image model: no paid call.
    with Pipeline(client, provider=ScriptedProvider(), image_renderer=model) as modelled:
        modelled.deliver(by_card.output.id)
        assert len(model_draws) == drawn
        assert _png_size(client.storage.download(card_image.storage_path)) == (1200, 630)
        # A model's picture is redrawn only by the model, at the size recorded.
        size["width"] = 1024
        with pytest.raises(ProviderError, match="1024x1024, not the 1536x1024"):
            modelled.deliver(by_model.output.id)
        with pytest.raises(NotFoundError):
            client.storage.download(model_image.storage_path)
        size["width"] = 1536
        modelled.deliver(by_model.output.id)
        assert len(model_draws) == drawn + 2
        client.storage.download(model_image.storage_path)
    client.storage.remove(model_image.storage_path)
    with (
        Pipeline(client, provider=ScriptedProvider()) as carded,
        pytest.raises(ConfigurationError, match="image model"),
    ):
        carded.deliver(by_model.output.id)  # never a title card in place of the model's picture


def test_a_draft_the_templates_wrote_is_not_sent_to_a_model_for_review(client: IdeaExpansion) -> None:
    """After the draft falls back to the offline templates, no revision can follow: a model's review of the
    templates' draft would only spend tokens (it did, and its score was recorded on an uncharged run)."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task == "blog_post":
            raise Refuse(400, "the model did not follow the response format")
        return BLOG_RUN_ANSWERS[task]

    user = new_user(client)
    with ModelServer(answer, model="served-model") as server:
        provider = FallbackProvider([OpenAIProvider(base_url=server.base_url, max_retries=0), OfflineProvider()])
        with Pipeline(client, provider=provider, image_mode="none") as pipeline:
            result = pipeline.expand(user, idea_id=new_idea(client, user), format="blog_post")
        asked = [task_of(request["body"]) for request in server.requests]
    assert asked == ["judge", "plan", "blog_post"]
    execution = client.executions.get(result.execution.id)
    assert (execution.generation, execution.charged, execution.review_score) == ("fallback", False, None)
    assert "review" not in [call.task for call in execution.model_calls]
