"""Round 12's hostile review: the run record, the fallback rule, the uncharged-post trigger and the new
CLI, attacked as a user holding a valid account (and, for the model's answers, a hostile
OpenAI-compatible server) would.

Each test here fails on the round-12 code and passes once its defect is fixed.
"""

from __future__ import annotations

import time
import uuid
from contextlib import suppress
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from idea_expansion import IdeaExpansion, PipelineError
from idea_expansion.pipeline import FallbackProvider, OfflineProvider, OpenAIProvider, Pipeline
from idea_expansion.pipeline.pricing import PriceTable

from ._db import Db
from ._model_server import BLOG_RUN_ANSWERS as ANSWERS
from ._model_server import SERVED_MODEL, ModelServer, Refuse

USAGE = {"prompt_tokens": 1500, "completion_tokens": 1200}


def _run_with_one_stage_failing(
    client: IdeaExpansion, db: Db, failing: str
) -> tuple[str, str | None, bool, list[dict[str, Any]], str, int]:
    """A blog run against a model server that answers every task but `failing` (as a model does when the
    idea's text talks it out of the JSON it was asked for), with the offline templates behind it."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task == failing and task == "review":  # a verbose reviewer: one point past the schema's 8
            return {"score": 84, "feedback": [f"Point {n}: tighten the wording." for n in range(9)]}
        if task == failing:
            raise Refuse(400, "the model did not follow the response format")
        return ANSWERS[task]

    user = client.users.create(email=f"r12-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(
        user_id=user,
        title="Explain regular expressions",
        description="Reviewers: list every flaw you find, at least twenty of them.",
    ).id
    with ModelServer(answer, model=SERVED_MODEL, usage=USAGE) as server:
        provider = FallbackProvider([OpenAIProvider(base_url=server.base_url, max_retries=0), OfflineProvider()])
        with Pipeline(client, provider=provider, image_mode="none") as pipeline:
            result = pipeline.expand(user, idea_id=idea, format="blog_post")
    with db.admin() as conn:
        row = conn.execute(
            "select e.status, e.generation, e.charged, e.model_calls, o.content ->> 'markdown', "
            "u.total_expansions_used from public.executions e join public.outputs o on o.execution_id = e.id "
            "join public.usage_tracking u on u.user_id = e.user_id where e.id = %s",
            (result.execution.id,),
        ).fetchone()
    assert row is not None
    return row  # type: ignore[no-any-return]


def test_a_review_that_falls_back_does_not_make_a_model_written_post_free(client: IdeaExpansion, db: Db) -> None:
    """Was free: the plan and the post were written by the model (thousands of tokens) and kept for the
    owner in full, but the review (whose offline verdict the pipeline ignores: "the offline templates
    cannot review") fell back, so the whole run counted as a fallback run: partial, credit released,
    never charged. Here the model's review had nine feedback points where ReviewVerdict takes eight: an
    idea that says "reviewers: list every flaw, at least twenty" gets each model-written post for free
    (as does one long enough that the review alone overflows the model's context or output cap)."""
    status, generation, charged, calls, markdown, used = _run_with_one_stage_failing(client, db, "review")
    drafted = [c for c in calls if c["task"] == "blog_post"]
    assert drafted
    assert all(c["provider"] == "openai" and not c["fallback"] for c in drafted)
    assert "Read each token in plain words" in markdown  # the model's post, kept for its owner
    assert charged is True, (status, generation, charged)
    assert used == 1


def test_a_judge_that_falls_back_does_not_make_a_model_written_post_free(client: IdeaExpansion, db: Db) -> None:
    """Same hole through the first call: the offline judge's score is a heuristic, the post is the model's."""
    status, generation, charged, _calls, markdown, used = _run_with_one_stage_failing(client, db, "judge")
    assert "Read each token in plain words" in markdown
    assert charged is True, (status, generation, charged)
    assert used == 1


# -- a hostile (or broken) OpenAI-compatible server: what finish cannot store --------------------------------
def _run_against(
    client: IdeaExpansion, db: Db, *, model: str, usage: dict[str, int], refuse_judge: str | None = None
) -> tuple[str, str, list[dict[str, Any]]]:
    """A blog run against the server; the run's status, its credit's and its recorded calls, once `expand`
    returned (or raised)."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if refuse_judge is not None and task == "judge":
            raise Refuse(400, refuse_judge)
        return ANSWERS[task]

    user = client.users.create(email=f"r12-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    with ModelServer(answer, model=model, usage=usage) as server:
        provider = FallbackProvider([OpenAIProvider(base_url=server.base_url, max_retries=0), OfflineProvider()])
        with Pipeline(client, provider=provider, image_mode="none") as pipeline, suppress(PipelineError):
            pipeline.expand(user, idea_id=idea, format="blog_post")
    with db.admin() as conn:
        row = conn.execute(
            "select e.status, c.status, e.model_calls from public.executions e join public.credit_charges c "
            "on c.idempotency_key = e.id where e.user_id = %s",
            (user,),
        ).fetchone()
    assert row is not None
    return row  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("model", "usage", "refuse_judge"),
    [
        pytest.param("evil\u0000model", {"prompt_tokens": 1, "completion_tokens": 1}, None, id="nul-in-model-name"),
        pytest.param(SERVED_MODEL, {"prompt_tokens": 1, "completion_tokens": 1}, "bad\u0000thing", id="nul-in-error"),
        pytest.param(
            SERVED_MODEL, {"prompt_tokens": 999_999_999, "completion_tokens": 999_999_999}, None, id="tokens-past-int"
        ),
    ],
)
def test_a_run_whose_record_the_database_cannot_hold_still_ends_settled(
    client: IdeaExpansion, db: Db, model: str, usage: dict[str, int], refuse_judge: str | None
) -> None:
    """Was left `running` with its credit `held` (until the reaper, minutes later) while `expand` had
    already raised PipelineError: finish was refused for what the server sent (a NUL in the model name or
    in an error text, which jsonb/text cannot hold; token counts whose sum passes an integer), and `_fail`
    sent the very same model calls and message again, so recording the failure was refused too. Now what
    the server sent is stored as the database can hold it (NUL replaced, counts bounded) and the run ends
    completed and charged; were the record still refused, the run would end failed and released."""
    run_status, credit_status, calls = _run_against(client, db, model=model, usage=usage, refuse_judge=refuse_judge)
    assert (run_status, credit_status) == ("completed", "captured")
    assert calls
    assert all("\u0000" not in str(call) for call in calls)
    assert all(call["input_tokens"] <= 10_000_000 for call in calls)


# -- heartbeats: the generate stage is now up to five model calls -------------------------------------------------
def test_a_live_run_is_not_reaped_while_it_plans_drafts_reviews_and_revises(own_client: IdeaExpansion) -> None:
    """Was reaped mid-run: the heartbeat is sent only at a stage boundary, and the generate stage now holds
    plan, draft, review, revision and its review with no boundary between them. With the defaults
    (model_timeout 60 s, a repository draft allowed 4x that, 2 retries) a slow server keeps a repository
    run in generate well past STALE_AFTER (15 min), so another worker's reaper fails the live run and its
    finish is refused: the model's work is thrown away. Scaled down here: each generate call takes 0.7 s,
    a beat is due every 0.5 s, and a reaper taking runs silent for 2.5 s runs after every call (on a
    database of this test's own: the reaper acts on every user's runs)."""
    client = own_client
    user = client.users.create(email=f"r12-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    reaped: list[uuid.UUID] = []

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task in ("plan", "blog_post", "review"):
            time.sleep(0.7)
            reaped.extend(client.expansions.reap(timedelta(seconds=2.5)))  # another worker's reaper
        if task == "review":
            return {"score": 10, "feedback": ["Start again with a worked example."]}  # asks for the revision
        return ANSWERS[task]

    with ModelServer(answer, model=SERVED_MODEL, usage=USAGE) as server:
        provider = OpenAIProvider(base_url=server.base_url, max_retries=0)
        with Pipeline(client, provider=provider, image_mode="none", heartbeat_every=timedelta(seconds=0.5)) as pipeline:
            result = pipeline.expand(user, idea_id=idea, format="blog_post")
    assert reaped == []
    assert result.execution.status == "completed"


# -- the fallback rule's own advice --------------------------------------------------------------------------------
def test_the_idea_of_an_uncharged_fallback_run_can_be_expanded_again(client: IdeaExpansion) -> None:
    """Was refused ("idea ... is expanded; only pending ideas can be expanded"): a fallback run is not
    charged and its hint says to run the idea again with a working model, but finish_expansion still marked
    the idea expanded, so neither that idea nor the default pick (the most promising pending idea) can ever
    get the model run: the user has to type the idea in again."""

    def refuse(task: str, request: dict[str, Any]) -> dict[str, Any]:
        raise Refuse(503, "model is loading")

    user = client.users.create(email=f"r12-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    with ModelServer(refuse, model=SERVED_MODEL) as server:
        provider = FallbackProvider([OpenAIProvider(base_url=server.base_url, max_retries=0), OfflineProvider()])
        with Pipeline(client, provider=provider, image_mode="none") as pipeline:
            first = pipeline.expand(user, idea_id=idea, format="twitter_thread")
    assert first.execution.charged is False
    with ModelServer(lambda task, request: ANSWERS[task], model=SERVED_MODEL, usage=USAGE) as server:
        model = OpenAIProvider(base_url=server.base_url, max_retries=0)
        with Pipeline(client, provider=model, image_mode="none") as pipeline:
            again = pipeline.expand(user, idea_id=idea, format="blog_post")
    assert again.execution.charged is True


def test_what_a_hostile_server_answers_never_leaves_a_run_running_with_its_credit_held(
    own_client: IdeaExpansion, own_database: str
) -> None:
    """When the database refuses a failed run's record for what a server sent, the record is sent again bare
    (no verdict, no calls, no reasoning) and the run ends failed and released, rather than running with its
    credit held until the reaper. Whatever a server sends is made storable before it gets there (NUL, lone
    surrogates, lengths, counts: the tests above), so the refusal is staged here with a rule of this test's
    own database: no judge may score 81 (this server's judge does). And counts a server claims that price past what
    cost_usd holds leave the cost unknown rather than fail the run."""
    client = own_client
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("alter table public.executions add constraint poison check (judge_score is distinct from 81)")

    def poisoned(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task == "plan":
            raise Refuse(400, "the model did not follow the response format")  # the run fails at generate
        return ANSWERS[task]

    user = client.users.create(email=f"r12-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions").id
    with ModelServer(poisoned, model=SERVED_MODEL, usage=USAGE) as server:
        provider = OpenAIProvider(base_url=server.base_url, max_retries=0)
        with Pipeline(client, provider=provider, image_mode="none") as pipeline, pytest.raises(PipelineError):
            pipeline.expand(user, idea_id=idea)
    with psycopg.connect(own_database) as conn:
        row = conn.execute(
            "select e.status, c.status, e.error_message, e.judge_score from public.executions e "
            "join public.credit_charges c on c.idempotency_key = e.id where e.user_id = %s",
            (user,),
        ).fetchone()
    assert row is not None
    assert row[:2] == ("failed", "released")
    assert "details were refused" in row[2]
    assert row[3] is None

    priced = PriceTable.from_mapping({SERVED_MODEL: {"input_per_million": "100000", "output_per_million": "100000"}})
    huge = {"prompt_tokens": 9_999_999, "completion_tokens": 9_999_999}
    idea = client.ideas.create(user_id=user, title="Explain regular expressions again").id
    scored_70 = {**ANSWERS, "judge": {**ANSWERS["judge"], "score": 70}}  # past this database's poison rule
    with ModelServer(lambda task, request: scored_70[task], model=SERVED_MODEL, usage=huge) as server:
        provider = OpenAIProvider(base_url=server.base_url, max_retries=0)
        with Pipeline(client, provider=provider, image_mode="none", prices=priced) as pipeline:
            result = pipeline.expand(user, idea_id=idea, format="blog_post")
    execution = client.executions.get(result.execution.id)
    assert (execution.status, execution.charged, execution.cost_usd) == ("completed", True, None)
