"""Acceptance: a real pipeline run against a local OpenAI-compatible server on 127.0.0.1 (tests/_model_server.py,
real HTTP through the OpenAI SDK; no respx), with the model name and tokens the server returned stored on the
execution row and the cost from a price table; and the same server failing, for a fallback run that is shown
as such and not charged."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from idea_expansion import IdeaExpansion, PipelineError
from idea_expansion.pipeline import FallbackProvider, OfflineProvider, OpenAIProvider, Pipeline
from idea_expansion.pipeline.pricing import PriceTable
from idea_expansion.types import ExecutionStatus

from ._db import Db
from ._model_server import BLOG_RUN_ANSWERS as ANSWERS
from ._model_server import SERVED_MODEL, ModelServer, Refuse

USAGE = {
    "judge": {"prompt_tokens": 812, "completion_tokens": 41},
    "plan": {"prompt_tokens": 905, "completion_tokens": 160},
    "blog_post": {"prompt_tokens": 1433, "completion_tokens": 1210},
    "review": {"prompt_tokens": 2790, "completion_tokens": 95},
}


def _answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
    return ANSWERS[task]


def test_a_run_against_a_local_openai_compatible_server_records_what_it_returned(client: IdeaExpansion, db: Db) -> None:
    user = client.users.create(email=f"local-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    prices = PriceTable.from_mapping({SERVED_MODEL: {"input_per_million": "0.20", "output_per_million": "0.80"}})
    with ModelServer(_answer, model=SERVED_MODEL, usage=lambda task: USAGE[task]) as server:
        provider = OpenAIProvider(base_url=server.base_url, model="llama3.1", max_retries=0)
        with Pipeline(client, provider=provider, prices=prices) as pipeline:
            result = pipeline.expand(user, idea_id=idea, format="blog_post")
        sent = [request["body"]["model"] for request in server.requests]
    assert sent == ["llama3.1"] * 4  # asked for llama3.1 ...
    with db.admin() as conn:  # ... and the row says what answered, straight from the database
        row = conn.execute(
            "select status, generation, charged, input_tokens, output_tokens, tokens_used, cost_usd, review_score, "
            "model_calls from public.executions where id = %s",
            (result.execution.id,),
        ).fetchone()
    assert row is not None
    status, generation, charged, input_tokens, output_tokens, tokens_used, cost, review_score, calls = row
    assert (status, generation, charged, review_score) == ("completed", "model", True, 84)
    text_calls = [call for call in calls if call["stage"] != "image"]
    assert [(c["task"], c["provider"], c["model"]) for c in text_calls] == [
        (task, "openai", SERVED_MODEL) for task in ("judge", "plan", "blog_post", "review")
    ]
    assert [(c["input_tokens"], c["output_tokens"]) for c in text_calls] == [
        (USAGE[t]["prompt_tokens"], USAGE[t]["completion_tokens"]) for t in ("judge", "plan", "blog_post", "review")
    ]
    assert calls[-1] == {
        "stage": "image",
        "task": "image",
        "provider": "offline",
        "model": "title-card",
        "input_tokens": 0,
        "output_tokens": 0,
        "fallback": False,
        "failed": False,
        "usage_reported": True,
    }
    expected_in = sum(u["prompt_tokens"] for u in USAGE.values())
    expected_out = sum(u["completion_tokens"] for u in USAGE.values())
    assert (input_tokens, output_tokens, tokens_used) == (expected_in, expected_out, expected_in + expected_out)
    exact = (Decimal(expected_in) * Decimal("0.20") + Decimal(expected_out) * Decimal("0.80")) / 1_000_000
    assert exact == Decimal("0.0023928")
    assert cost == Decimal("0.002393")  # numeric(12,6): to the millionth of a dollar
    assert result.execution.model_calls[0].model == SERVED_MODEL


def test_the_server_down_makes_a_fallback_run_that_is_not_charged(client: IdeaExpansion, db: Db) -> None:
    def refuse(task: str, request: dict[str, Any]) -> dict[str, Any]:
        raise Refuse(503, "model is loading")

    user = client.users.create(email=f"local-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    with ModelServer(refuse, model=SERVED_MODEL) as server:
        provider = FallbackProvider([OpenAIProvider(base_url=server.base_url, max_retries=0), OfflineProvider()])
        with Pipeline(client, provider=provider) as pipeline:
            result = pipeline.expand(user, idea_id=idea, format="twitter_thread")
    execution = client.executions.get(result.execution.id)
    assert (execution.status, execution.generation, execution.charged) == (ExecutionStatus.PARTIAL, "fallback", False)
    assert execution.error_step == "generate"  # the stage whose content the templates wrote
    assert "model is loading" in (execution.error_message or "")
    answered = [call for call in execution.model_calls if not call.failed]
    assert all(call.provider == "offline" and call.fallback_errors for call in answered if call.stage != "image")
    # Only the draft is a fallback: the judge answered offline is recorded with why, and changes nothing.
    assert [(call.task, call.fallback) for call in answered if call.stage != "image"] == [
        ("judge", False),
        ("twitter_thread", True),
    ]
    # Each refused request is recorded too: no answer, no usage reported, nothing spent.
    refused = [call for call in execution.model_calls if call.failed]
    assert [call.task for call in refused] == [call.task for call in answered if call.stage != "image"]
    assert all(
        (call.provider, call.input_tokens, call.output_tokens, call.usage_reported) == ("openai", 0, 0, False)
        and "model is loading" in (call.error or "")
        for call in refused
    )
    usage = client.credits.balance(user)
    assert (usage.free_expansions_remaining, usage.total_expansions_used) == (5, 0)
    status = db.scalar("select status from public.credit_charges where idempotency_key = %s", (execution.id,))
    assert status == "released"


def test_an_answer_that_does_not_fit_is_recorded_with_the_tokens_it_spent(client: IdeaExpansion, db: Db) -> None:
    """A served answer off the schema spent what the server reported: the failed call is recorded with those
    tokens (on the failed run too) and priced into the run's cost."""

    def off_schema(task: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"score": 500, "reasoning": "Out of range."}

    user = client.users.create(email=f"local-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    prices = PriceTable.from_mapping({SERVED_MODEL: {"input_per_million": "0.20", "output_per_million": "0.80"}})
    usage = {"prompt_tokens": 812, "completion_tokens": 41}
    with ModelServer(off_schema, model=SERVED_MODEL, usage=usage) as server:
        provider = OpenAIProvider(base_url=server.base_url, model="llama3.1", max_retries=0)
        with Pipeline(client, provider=provider, prices=prices) as pipeline, pytest.raises(PipelineError):
            pipeline.expand(user, idea_id=idea, format="twitter_thread")
    (execution,) = client.executions.list(user_id=user)
    assert execution.status == ExecutionStatus.FAILED
    (call,) = execution.model_calls
    assert (call.task, call.provider, call.model, call.failed) == ("judge", "openai", SERVED_MODEL, True)
    assert (call.input_tokens, call.output_tokens, call.usage_reported) == (812, 41, True)
    assert (execution.input_tokens, execution.output_tokens) == (812, 41)
    assert execution.cost_usd == Decimal("0.000195")  # 812 * 0.20 + 41 * 0.80 per million, to the millionth
    assert client.credits.balance(user).total_expansions_used == 0
