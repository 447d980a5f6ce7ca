"""The pipeline on the real database with the offline provider: every format end to end, a failure at
every stage, parallel runs against a small balance, idempotent retries, the queue and the reaper.
Tests that claim, reap or drain the queue act on every user's rows, so they use a database of their own
(`own_client`). The hostile-user tests of the run lifecycle are in test_run_lifecycle.py."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from idea_expansion import (
    ExecutionStatus,
    IdeaExpansion,
    IdeaStatus,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    OutputFormat,
)
from idea_expansion._exceptions import PipelineError
from idea_expansion.pipeline import (
    BlogPostContent,
    GitHubRepoContent,
    ImageContent,
    OfflineProvider,
    Pipeline,
    ProviderError,
    TwitterThreadContent,
)
from idea_expansion.pipeline.providers import Completion, IdeaBrief, Task
from idea_expansion.types import Stage
from idea_expansion.types.expansions import Evaluation

from ._db import Db

T = TypeVar("T", bound=BaseModel)


@dataclass
class CountingProvider:
    """The offline provider, charging 100 input + 20 output tokens a call and recording every call."""

    name: str = "counting-offline"
    calls: list[tuple[Task, str]] = field(default_factory=list)
    fail_on: Task | None = None
    _offline: OfflineProvider = field(default_factory=OfflineProvider)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        with self._lock:
            self.calls.append((task, idea.title))
        if task == self.fail_on:
            raise ProviderError(f"injected provider failure in {task}")
        value = self._offline.generate(task, schema, idea=idea, instructions=instructions).value
        return Completion(value, 100, 20, "counting")


@pytest.fixture
def provider() -> CountingProvider:
    return CountingProvider()


@pytest.fixture
def pipeline(client: IdeaExpansion, provider: CountingProvider) -> Pipeline:
    return Pipeline(client, provider=provider)


def new_user(client: IdeaExpansion, **usage: int) -> uuid.UUID:
    user = client.users.create(email=f"pipe-{uuid.uuid4().hex[:10]}@example.test")
    if usage:
        sets = ", ".join(f"{k} = {int(v)}" for k, v in usage.items())
        client.backend.query(  # type: ignore[attr-defined]
            f"update public.usage_tracking set {sets} where user_id = %s", (user.id,), client.scope
        )
    return user.id


def new_idea(client: IdeaExpansion, user_id: uuid.UUID, title: str = "Explain regular expressions") -> uuid.UUID:
    return client.ideas.create(
        user_id=user_id,
        title=title,
        description="Paste a pattern and read what it matches, in plain words.",
        bullets=["works offline", "colour output"],
        external_links=["https://example.test/regex"],
    ).id


def snapshot(client: IdeaExpansion, user_id: uuid.UUID) -> tuple[int, int, int]:
    usage = client.credits.balance(user_id)
    return usage.free_expansions_remaining, usage.paid_credits_remaining, usage.total_expansions_used


CONTENT = {
    OutputFormat.BLOG_POST: BlogPostContent,
    OutputFormat.TWITTER_THREAD: TwitterThreadContent,
    OutputFormat.GITHUB_REPO: GitHubRepoContent,
    OutputFormat.IMAGE: ImageContent,
}


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_each_format_end_to_end(
    client: IdeaExpansion, pipeline: Pipeline, provider: CountingProvider, fmt: OutputFormat, db: Db
) -> None:
    user = new_user(client)
    idea = new_idea(client, user)
    key = uuid.uuid4()
    seen: list[Stage] = []
    result = pipeline.expand(
        user, idea_id=idea, format=fmt, idempotency_key=key, on_progress=lambda s, _: seen.append(s)
    )
    e = result.execution

    # github_repo without a GitHub token: the repository is saved, publishing is reported, nothing faked
    expected_status = ExecutionStatus.PARTIAL if fmt == OutputFormat.GITHUB_REPO else ExecutionStatus.COMPLETED
    assert e.status == expected_status
    assert (e.user_id, e.selected_idea_id, e.idempotency_key, e.requested_format) == (user, idea, key, fmt)
    assert e.format_chosen == fmt
    assert e.format_reasoning == "Requested by the caller."
    assert e.judge_score is not None
    assert 0 <= e.judge_score <= 100
    assert e.judge_reasoning
    # judge + generate, summed; blog posts and repositories are also planned and reviewed (model_usage)
    planned = fmt in (OutputFormat.BLOG_POST, OutputFormat.GITHUB_REPO)
    assert e.tokens_used == 120 * len(provider.calls) == (480 if planned else 240)
    assert e.current_stage == Stage.DONE
    assert e.completed_at is not None
    assert e.completed_at >= e.started_at
    assert e.duration_seconds is not None
    assert e.duration_seconds >= 0
    assert e.heartbeat_at is not None
    if fmt == OutputFormat.GITHUB_REPO:
        assert e.error_step == "publish"
        assert e.error_message
        assert "no active GitHub token" in e.error_message
    else:
        assert (e.error_step, e.error_message) == (None, None)
    expected_stages = ["select", "judge", "choose_format", "generate"]
    expected_stages += {"blog_post": ["image"], "image": ["image"]}.get(fmt.value, [])
    # github_repo without a token: known before the capture, so there is nothing to push after it
    assert [s.value for s in seen] == [*expected_stages, "persist"]

    assert len(result.outputs) == 1
    output = result.outputs[0]
    assert (output.format, output.execution_id, output.idea_id, output.user_id) == (fmt, e.id, idea, user)
    content = result.content()
    assert isinstance(content, CONTENT[fmt])
    assert "data:" not in output.content.model_dump_json()
    assert output.published is False
    assert output.publication_url is None
    assert client.ideas.get(idea).status == IdeaStatus.EXPANDED
    assert snapshot(client, user) == (4, 0, 1)
    assert [c.status for c in client.credits.charges(user)] == ["captured"]

    if isinstance(content, BlogPostContent):
        post = client.blog_posts.get_by_slug(content.slug, user_id=user)
        assert post.output_id == output.id
        assert result.blog_post == post
        assert post.is_public is False  # private unless the caller asked
        assert post.id not in {p.id for p in client.anonymous().blog_posts.list_public(limit=1000)}
        assert post.html_content == content.html
        assert len(content.meta_description) <= 160
        assert content.cover_image is not None
        assert client.storage.download(content.cover_image.storage_path)[:8] == b"\x89PNG\r\n\x1a\n"
    if isinstance(content, ImageContent):
        assert content.image.storage_path == f"{user}/{e.id}/image.png"
        assert content.image.url.startswith("file://")
        assert Path(content.image.url.removeprefix("file://")).read_bytes()[:4] == b"\x89PNG"
    if isinstance(content, TwitterThreadContent):
        assert 3 <= len(content.posts) <= 10
        assert all(len(p) <= 280 and p.startswith(f"{n}/") for n, p in enumerate(content.posts, 1))
    if isinstance(content, GitHubRepoContent):
        assert content.repo_name == "explain-regular-expressions"
        assert {f.path for f in content.files} >= {"README.md", "main.py", "requirements.txt"}


def test_without_an_idea_the_database_picks_the_most_promising_and_the_provider_the_format(
    client: IdeaExpansion, pipeline: Pipeline, db: Db
) -> None:
    user = new_user(client)
    older = new_idea(client, user, "A library to parse dates")
    promising = client.ideas.create(user_id=user, title="A CLI that explains regular expressions").id
    with db.admin() as conn:  # a score an earlier judge gave it
        conn.execute("update public.ideas set priority_score = 80 where id = %s", (promising,))
    result = pipeline.expand(user)
    e = result.execution
    assert e.selected_idea_id == promising  # best judge score first, then the oldest
    assert e.format_chosen == OutputFormat.GITHUB_REPO
    assert e.format_reasoning
    assert e.format_reasoning != "Requested by the caller."
    ideas = {i.id: i for i in client.ideas.list(user_id=user)}
    assert ideas[promising].times_evaluated == 1
    assert ideas[promising].priority_score == e.judge_score
    assert ideas[older].status == IdeaStatus.PENDING
    assert ideas[older].times_evaluated == 0
    assert pipeline.expand(user, format="twitter_thread").execution.selected_idea_id == older


STAGES = [Stage.SELECT, Stage.JUDGE, Stage.CHOOSE_FORMAT, Stage.GENERATE, Stage.IMAGE, Stage.PERSIST]


@pytest.mark.parametrize("stage", STAGES, ids=[s.value for s in STAGES])
def test_failure_at_each_stage_is_recorded_and_never_charged(
    client: IdeaExpansion, pipeline: Pipeline, stage: Stage
) -> None:
    user = new_user(client)
    idea = new_idea(client, user)
    before = snapshot(client, user)

    def inject(current: Stage, _: uuid.UUID) -> None:
        if current == stage:
            raise RuntimeError(f"injected failure at {current}")

    with pytest.raises(PipelineError) as failed:
        pipeline.expand(user, idea_id=idea, format="blog_post", on_progress=inject)
    assert failed.value.stage == stage
    execution = client.executions.get(failed.value.execution_id)
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error_step == stage.value
    assert execution.error_message == f"RuntimeError: injected failure at {stage.value}"
    assert execution.completed_at is not None
    # The judge's verdict is kept on failed runs that got past it.
    judged = stage not in (Stage.SELECT, Stage.JUDGE)
    assert (execution.judge_score is not None, execution.judge_reasoning is not None) == (judged, judged)
    # a blog post's generate stage is three calls: plan, draft, review (model_usage)
    assert execution.tokens_used == (120 if judged else 0) + (360 if stage in (Stage.IMAGE, Stage.PERSIST) else 0)
    assert snapshot(client, user) == before
    assert [c.status for c in client.credits.charges(user)] == ["released"]
    assert client.ideas.get(idea).status == IdeaStatus.PENDING
    assert list(client.outputs.list(execution_id=execution.id)) == []
    assert list(client.blog_posts.list(user_id=user)) == []
    with pytest.raises(NotFoundError):  # nothing the user could see was stored
        client.storage.download(f"{user}/{execution.id}/cover.png")


def test_provider_failure_in_generation(client: IdeaExpansion, provider: CountingProvider, pipeline: Pipeline) -> None:
    provider.fail_on = "twitter_thread"
    user = new_user(client)
    idea = new_idea(client, user)
    with pytest.raises(PipelineError, match="injected provider failure") as failed:
        pipeline.expand(user, idea_id=idea, format="twitter_thread")
    assert failed.value.stage == Stage.GENERATE
    assert client.executions.get(failed.value.execution_id).error_step == "generate"
    assert snapshot(client, user) == (5, 0, 0)


def test_no_pending_idea_is_refused_before_anything_is_held(client: IdeaExpansion, pipeline: Pipeline) -> None:
    user = new_user(client)
    with pytest.raises(NotFoundError, match="no pending idea"):
        pipeline.expand(user)
    assert snapshot(client, user) == (5, 0, 0)
    assert list(client.executions.list(user_id=user)) == []
    assert list(client.credits.charges(user)) == []


def test_eight_parallel_runs_with_three_credits(
    client: IdeaExpansion, pipeline: Pipeline, provider: CountingProvider
) -> None:
    user = new_user(client, free_expansions_remaining=3)
    ideas = [new_idea(client, user, f"Idea number {n}") for n in range(8)]
    barrier = threading.Barrier(8)
    outcomes: list[Any] = [None] * 8

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = pipeline.expand(user, idea_id=ideas[index], format="twitter_thread")
        except InsufficientCreditsError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    delivered = [o for o in outcomes if not isinstance(o, InsufficientCreditsError)]
    refused = [o for o in outcomes if isinstance(o, InsufficientCreditsError)]
    print(f"\n8 parallel expansions, 3 credits: {len(delivered)} delivered, {len(refused)} refused")
    assert (len(delivered), len(refused)) == (3, 5)
    assert all(r.status == ExecutionStatus.COMPLETED for r in delivered)
    # refused runs were refused before any generation: the provider only worked for the three
    assert Counter(task for task, _ in provider.calls) == {"judge": 3, "twitter_thread": 3}
    assert len(list(client.outputs.list(user_id=user))) == 3
    assert snapshot(client, user) == (0, 0, 3)
    assert Counter(c.status for c in client.credits.charges(user)) == {"captured": 3}


def test_retry_with_the_same_key_returns_the_same_run(
    client: IdeaExpansion, pipeline: Pipeline, provider: CountingProvider
) -> None:
    user = new_user(client)
    idea = new_idea(client, user)
    key = uuid.uuid4()
    first = pipeline.expand(user, idea_id=idea, format="twitter_thread", idempotency_key=key)
    calls = len(provider.calls)
    again = pipeline.expand(user, idea_id=idea, format="twitter_thread", idempotency_key=key)
    assert again.execution.id == first.execution.id
    assert [o.id for o in again.outputs] == [o.id for o in first.outputs]
    assert len(provider.calls) == calls
    assert snapshot(client, user) == (4, 0, 1)
    queued = pipeline.enqueue(user, idempotency_key=key)
    assert queued.id == first.execution.id


def test_bad_requests_are_refused_before_holding_anything(client: IdeaExpansion, pipeline: Pipeline) -> None:
    user = new_user(client)
    stranger = new_user(client)
    foreign_idea = new_idea(client, stranger)
    with pytest.raises(NotFoundError, match="Idea not found"):
        pipeline.expand(user, idea_id=foreign_idea)
    archived = new_idea(client, user)
    client.ideas.archive(archived)
    with pytest.raises(InvalidRequestError, match="only pending ideas"):
        pipeline.expand(user, idea_id=archived)
    with pytest.raises(InvalidRequestError, match="format"):
        pipeline.expand(user, format="video")
    assert snapshot(client, user) == (5, 0, 0)


def test_queued_runs_are_claimed_once_and_status_reports_them(
    own_client: IdeaExpansion, provider: CountingProvider
) -> None:
    client, pipeline = own_client, Pipeline(own_client, provider=provider)
    user = new_user(client)
    runs = [
        pipeline.enqueue(user, idea_id=new_idea(client, user, f"Queued {n}"), format="twitter_thread") for n in range(3)
    ]
    assert snapshot(client, user) == (2, 0, 0)  # held at enqueue time
    assert pipeline.status(runs[0].id).status == ExecutionStatus.QUEUED
    assert client.for_user(user).expansions.status(runs[0].id).status == ExecutionStatus.QUEUED  # users poll too
    # Threads: CountingProvider holds a lock, so it cannot be sent to worker processes.
    assert pipeline.run_worker(concurrency=1, threads_per_process=2, exit_when_idle=True) == 3
    for run in runs:
        status = pipeline.status(run.id)
        assert status.status == ExecutionStatus.COMPLETED
        assert len(status.output_ids) == 1
        assert status.current_stage == Stage.DONE
        assert status.execution.selected_idea_id == run.selected_idea_id  # the idea fixed at enqueue
    assert snapshot(client, user) == (2, 0, 3)


def test_stale_runs_are_reaped_and_their_credit_released(own_client: IdeaExpansion, own_database: str) -> None:
    client, pipeline = own_client, Pipeline(own_client)
    user = new_user(client)
    run = pipeline.enqueue(user, idea_id=new_idea(client, user), format="blog_post")
    db = Db(own_database)
    try:
        with db.admin() as conn:
            conn.execute(
                "update public.executions set status = 'running', heartbeat_at = now() - interval '20 minutes' "
                "where id = %s",
                (run.id,),
            )
    finally:
        db.close()
    assert pipeline.reap() == [run.id]
    execution = client.executions.get(run.id)
    assert (execution.status, execution.error_step) == (ExecutionStatus.FAILED, "timeout")
    assert snapshot(client, user) == (5, 0, 0)
    assert pipeline.reap(timedelta(seconds=0)) == []


def test_a_failed_cover_image_makes_a_partial_run_that_is_charged_once(
    client: IdeaExpansion, provider: CountingProvider
) -> None:
    def broken_renderer(_: Any) -> tuple[bytes, int, int, int]:
        raise OSError("renderer crashed")

    pipeline = Pipeline(client, provider=provider, image_renderer=broken_renderer)
    user = new_user(client)
    idea = new_idea(client, user)
    result = pipeline.expand(user, idea_id=idea, format="blog_post")
    assert result.status == ExecutionStatus.PARTIAL
    assert result.execution.error_step == "image"
    assert "renderer crashed" in (result.execution.error_message or "")
    content = result.content()
    assert isinstance(content, BlogPostContent)
    assert content.cover_image is None
    assert client.ideas.get(idea).status == IdeaStatus.EXPANDED
    assert snapshot(client, user) == (4, 0, 1)
    # an image run cannot be partial: the image is its output
    with pytest.raises(PipelineError) as failed:
        pipeline.expand(user, idea_id=new_idea(client, user, "A poster"), format="image")
    assert failed.value.stage == Stage.IMAGE
    assert snapshot(client, user) == (4, 0, 1)


def test_blog_slugs_are_unique_per_user_and_html_is_escaped(client: IdeaExpansion, pipeline: Pipeline) -> None:
    user = new_user(client)
    title = "Ship <script>alert(1)</script> small things"
    first = client.ideas.create(user_id=user, title=title, description="Use <b>bold</b> & <i>care</i>.")
    second = client.ideas.create(user_id=user, title=title)
    posts = []
    for idea in (first, second):
        content = pipeline.expand(user, idea_id=idea.id, format="blog_post").content()
        assert isinstance(content, BlogPostContent)
        posts.append(client.blog_posts.get(client.blog_posts.list(user_id=user, limit=1).data[0].id))
        assert "<script>" not in content.html
        assert "&lt;script&gt;" in content.html
        assert "<b>" not in content.html
    assert [p.slug for p in posts] == [
        "ship-script-alert-1-script-small-things",
        "ship-script-alert-1-script-small-things-2",
    ]
    other_user = new_user(client)
    other = client.ideas.create(user_id=other_user, title=title)
    public = pipeline.expand(other_user, idea_id=other.id, format="blog_post", public=True).blog_post
    assert public is not None
    assert (public.slug, public.is_public) == ("ship-script-alert-1-script-small-things", True)
    assert public.id in {p.id for p in client.anonymous().blog_posts.list_public(limit=1000)}


def test_a_key_that_is_queued_or_running_elsewhere_is_reported_not_run_again(
    client: IdeaExpansion, pipeline: Pipeline, provider: CountingProvider
) -> None:
    user = new_user(client)
    key = uuid.uuid4()
    queued = pipeline.enqueue(user, idea_id=new_idea(client, user), format="twitter_thread", idempotency_key=key)
    followed = pipeline.expand(user, idempotency_key=key)
    assert followed.execution.id == queued.id
    assert followed.status == ExecutionStatus.QUEUED
    assert followed.outputs == []
    assert provider.calls == []

    racing_key = uuid.uuid4()
    idea = new_idea(client, user, "Raced idea")
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def race() -> None:
        barrier.wait()
        results.append(pipeline.expand(user, idea_id=idea, format="twitter_thread", idempotency_key=racing_key))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.execution.id for r in results}) == 1
    assert Counter(task for task, _ in provider.calls) == {"judge": 1, "twitter_thread": 1}
    assert len(list(client.outputs.list(user_id=user))) == 1


def test_one_idea_is_never_in_two_runs(client: IdeaExpansion, pipeline: Pipeline) -> None:
    from idea_expansion import ConflictError

    user = new_user(client)
    idea = new_idea(client, user)
    pipeline.enqueue(user, idea_id=idea, format="blog_post")
    with pytest.raises(ConflictError, match="already being expanded"):
        pipeline.expand(user, idea_id=idea, format="blog_post")
    assert snapshot(client, user) == (4, 0, 0)  # only the queued run holds a credit


def test_credits_held_by_runs_in_flight_are_neither_charged_nor_refundable(own_client: IdeaExpansion) -> None:
    from idea_expansion import APIError

    client, pipeline = own_client, Pipeline(own_client)
    user = new_user(client, free_expansions_remaining=0)
    receipt = client.credits.grant(user, 1, "1.00", f"HELD-{uuid.uuid4().hex[:8]}")
    run = pipeline.enqueue(user, idea_id=new_idea(client, user), format="twitter_thread")
    with pytest.raises(APIError, match="still in flight") as consumed:
        client.credits.consume(user, idempotency_key=run.id)
    assert consumed.value.code == "55000"
    with pytest.raises(APIError, match="runs in flight holding paid credits") as refused:
        client.credits.refund(receipt.id)
    assert refused.value.code == "55000"
    assert pipeline.run_worker(exit_when_idle=True) == 1
    refund = client.credits.refund(receipt.id)
    assert (refund.credits_purchased, refund.credits_removed) == (1, 0)  # it was spent on the run


def test_a_worker_survives_a_database_blip(own_client: IdeaExpansion, provider: CountingProvider) -> None:
    from idea_expansion import APIConnectionError as DatabaseUnreachable

    class Flaky(Pipeline):
        blips = 2

        def _claim(self, worker: str) -> Any:
            if self.blips:
                self.blips -= 1
                raise DatabaseUnreachable("connection reset by peer")
            return super()._claim(worker)

    client = own_client
    pipeline = Flaky(client, provider=provider)
    user = new_user(client)
    run = pipeline.enqueue(user, idea_id=new_idea(client, user), format="twitter_thread")
    assert pipeline.run_worker(poll_interval=0.01, exit_when_idle=True) == 1
    assert client.executions.get(run.id).status == ExecutionStatus.COMPLETED


def test_an_evaluation_and_a_stage_beat_the_heartbeat(own_client: IdeaExpansion, own_database: str) -> None:
    client, pipeline = own_client, Pipeline(own_client)
    user = new_user(client)
    idea = new_idea(client, user)
    run = client.expansions.start(user, idea_id=idea, format="twitter_thread").execution
    db = Db(own_database)
    try:
        stale = "update public.executions set heartbeat_at = now() - interval '14 minutes' where id = %s"
        with db.admin() as conn:
            conn.execute(stale, (run.id,))
        client.expansions.record_evaluation(run.id, Evaluation(score=70, reasoning="worth it"))
        assert pipeline.reap() == []  # judged a moment ago: alive, not stale
        assert client.ideas.get(idea).times_evaluated == 1
        assert client.executions.get(run.id).judge_score == 70
        with db.admin() as conn:
            conn.execute(stale, (run.id,))
        client.expansions.record_stage(run.id, Stage.GENERATE)
        assert pipeline.reap() == []
        assert client.expansions.status(run.id).current_stage == Stage.GENERATE
    finally:
        db.close()


def test_long_runs_send_a_heartbeat_short_ones_do_not(client: IdeaExpansion, provider: CountingProvider) -> None:
    sent: list[Stage] = []

    class Watched(Pipeline):
        def _enter(self, run: Any, stage: Stage, on_progress: Any) -> None:
            beat = run.last_beat
            super()._enter(run, stage, on_progress)
            if run.last_beat != beat:
                sent.append(stage)

    user = new_user(client)
    Watched(client, provider=provider).expand(user, idea_id=new_idea(client, user), format="blog_post")
    assert sent == []  # a short run: start and finish are its only lifecycle calls
    beating = Watched(client, provider=provider, heartbeat_every=timedelta(0))
    result = beating.expand(user, idea_id=new_idea(client, user, "Another"), format="blog_post")
    assert sent == [Stage.JUDGE, Stage.CHOOSE_FORMAT, Stage.GENERATE, Stage.IMAGE, Stage.PERSIST]
    assert result.status == ExecutionStatus.COMPLETED


def test_an_offline_blog_post_survives_a_word_longer_than_a_tag(client: IdeaExpansion, pipeline: Pipeline) -> None:
    user = new_user(client)
    idea = client.ideas.create(user_id=user, title=f"Why {'x' * 60} matters").id
    result = pipeline.expand(user, idea_id=idea, format="blog_post")
    assert result.status == ExecutionStatus.COMPLETED
    content = result.content()
    assert isinstance(content, BlogPostContent)
    assert content.tags == ["matters"]
