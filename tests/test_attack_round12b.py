"""Round 12, second hostile review: the final state of the fallback rule and of what a hostile
OpenAI-compatible server can send, attacked as a user holding a valid account would (and as a broken or
hostile server would).

Each test here fails on the round-12 code and passes once its defect is fixed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from idea_expansion import IdeaExpansion, PipelineError
from idea_expansion.pipeline import ExpansionResult, FallbackProvider, OfflineProvider, OpenAIProvider, Pipeline
from idea_expansion.pipeline.providers.llm import OpenAIImageRenderer

from ._db import Db
from ._model_server import BLOG_RUN_ANSWERS as ANSWERS
from ._model_server import SERVED_MODEL, ModelServer, Refuse

USAGE = {"prompt_tokens": 1500, "completion_tokens": 1200}
JUDGE_TEXT = "MODEL-WRITTEN: the answer the idea asked the judge to write into its reasoning."
FORMAT_TEXT = "MODEL-WRITTEN: more of it, in the format choice's reasoning."


def _fallback_chain(base_url: str) -> FallbackProvider:
    return FallbackProvider([OpenAIProvider(base_url=base_url, max_retries=0), OfflineProvider()])


def _new_idea(client: IdeaExpansion) -> tuple[uuid.UUID, uuid.UUID]:
    user = client.users.create(email=f"r12b-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", description="Plain words.").id
    return user, idea


def _settled(db: Db, user: uuid.UUID) -> tuple[str, str]:
    with db.admin() as conn:
        row = conn.execute(
            "select e.status, c.status from public.executions e join public.credit_charges c "
            "on c.idempotency_key = e.id where e.user_id = %s",
            (user,),
        ).fetchone()
    assert row is not None
    return row  # type: ignore[no-any-return]


def _owners_view_of_a_run(
    client: IdeaExpansion, db: Db, answer: Callable[[str, dict[str, Any]], dict[str, Any]], columns: str
) -> tuple[Any, ...]:
    """A run of a new user's idea against a server answering with `answer` (the offline templates behind it),
    and `columns` of its execution as its owner reads them."""
    user, idea = _new_idea(client)
    with (
        ModelServer(answer, model=SERVED_MODEL, usage=USAGE) as server,
        Pipeline(client, provider=_fallback_chain(server.base_url), image_mode="none") as pipeline,
    ):
        pipeline.expand(user, idea_id=idea)
    with db.as_user(user) as conn:
        row = conn.execute(f"select {columns} from public.executions").fetchone()
    assert row is not None
    return tuple(row)


def _expand_or_none(pipeline: Pipeline, user: uuid.UUID, idea: uuid.UUID) -> ExpansionResult | None:
    try:
        return pipeline.expand(user, idea_id=idea, format="blog_post")
    except PipelineError:
        return None


# -- the fallback rule: what an uncharged run still hands its owner ------------------------------------------------
def test_an_uncharged_fallback_run_does_not_hand_its_owner_the_models_writing(client: IdeaExpansion, db: Db) -> None:
    """An idea can talk the drafter out of its schema as easily as the reviewer ("the post must be 20,000
    words": the draft is cut at its output cap, and the offline templates answer it). The run is then a
    fallback run: partial, its credit released, its idea left pending to be run again, as often as the user
    likes, on the one credit. Its stored content is the templates' (nothing of the model's draft), but the
    judge's and the format choice's reasoning, written by the model at the user's request, are kept on the
    execution, which its owner reads (their select grant): model-written text, on demand, never charged.
    An uncharged run should keep none of a model's writing for its owner (the offline judge's and
    chooser's reasoning, or none), or be charged."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task == "judge":
            return {"score": 90, "reasoning": JUDGE_TEXT}
        if task == "choose_format":
            return {"format": "blog_post", "reasoning": FORMAT_TEXT}
        if task == "blog_post":
            raise Refuse(400, "the model did not follow the response format")
        return ANSWERS[task]

    charged, generation, judge_reasoning, format_reasoning = _owners_view_of_a_run(
        client, db, answer, "charged, generation, coalesce(judge_reasoning, ''), coalesce(format_reasoning, '')"
    )
    assert generation == "fallback"
    assert charged is False
    assert "MODEL-WRITTEN" not in judge_reasoning + format_reasoning, (judge_reasoning, format_reasoning)


# -- what a hostile server sends that the database cannot hold ---------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        pytest.param("evil\ud800model", id="lone-surrogate-in-model-name"),
        pytest.param(123, id="model-name-not-a-string"),
    ],
)
def test_a_served_model_name_is_stored_as_the_database_can_hold_it(client: IdeaExpansion, db: Db, model: Any) -> None:
    """Round 12 stores a NUL in the served model's name as U+FFFD and the run completes, charged. A lone
    surrogate (JSON's "\\ud800", which Python decodes and UTF-8 cannot encode) or a name that is not a
    string (the OpenAI SDK does not check `response.model`) still fails every model-written run at its
    first call: ModelCall refuses the surrogate (a pydantic ValidationError) and `_storable` calls
    `.replace` on an int (AttributeError). Neither is a ProviderError, so the offline templates behind the
    model are never tried either, and the run's error text is a pydantic traceback line."""
    user, idea = _new_idea(client)
    with (
        ModelServer(lambda task, request: ANSWERS[task], model=model, usage=USAGE) as server,
        Pipeline(client, provider=_fallback_chain(server.base_url), image_mode="none") as pipeline,
    ):
        result = _expand_or_none(pipeline, user, idea)
    assert _settled(db, user) == ("completed", "captured")
    assert result is not None


def test_a_lone_surrogate_in_a_server_error_does_not_fail_a_run_the_templates_can_answer(
    client: IdeaExpansion, db: Db
) -> None:
    """A judge refused with an error text holding a lone surrogate: the offline judge answers (not a
    fallback: the post is still the model's, and charged). Round 12 fails the whole run instead, at the
    judge, because the refused call's error (recorded as a failed ModelCall) cannot be validated: the
    model-written post is never made, and the run's error message is pydantic's."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task == "judge":
            raise Refuse(400, "bad\ud800thing")
        return ANSWERS[task]

    user, idea = _new_idea(client)
    with (
        ModelServer(answer, model=SERVED_MODEL, usage=USAGE) as server,
        Pipeline(client, provider=_fallback_chain(server.base_url), image_mode="none") as pipeline,
    ):
        result = _expand_or_none(pipeline, user, idea)
    assert _settled(db, user) == ("completed", "captured")
    assert result is not None


def test_the_judges_and_choosers_reasoning_are_stored_bounded(client: IdeaExpansion, db: Db) -> None:
    """Every other text a server sends is clipped before it is stored (model names to 200, errors to 500,
    the run's message to 2,000), and content is checked against its schema; the judge's and the format
    choice's reasoning are not: JudgeVerdict and FormatDecision take any length, ExpansionOutcome passes
    them on, and executions.judge_reasoning / format_reasoning are unbounded text. A server that ignores the
    output cap (a local one may) writes 300,000 characters into each, on every run, and the owner's every
    read of the execution carries them ("Bounded sizes in DB")."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task in ("judge", "choose_format"):
            return {**ANSWERS[task], "reasoning": "r" * 300_000}
        return ANSWERS[task]

    row = _owners_view_of_a_run(
        client, db, answer, "length(coalesce(judge_reasoning, '')), length(coalesce(format_reasoning, ''))"
    )
    assert max(row) <= 10_000, row


IMAGE_ERROR = "the prompt was refused \ud800"


class _ImageErrorServer(ModelServer):
    """The model server, whose Images API refuses every picture with an error text holding a lone surrogate
    (JSON's "\\ud800": Python decodes it, UTF-8 cannot encode it)."""

    def _image(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"error": {"message": IMAGE_ERROR, "type": "invalid_request_error", "param": None, "code": None}}


def test_an_image_models_error_text_never_escapes_expand_or_leaves_the_run_held(client: IdeaExpansion, db: Db) -> None:
    """An image run whose image model refuses the picture fails (the picture is the run's output), and
    `expand` raises PipelineError with the run failed and its credit released. When the Images API's error
    text holds a lone surrogate, `_fail` builds its ExpansionOutcome with that text as `error_message`
    (`_storable` replaces NUL, not surrogates), pydantic refuses it, and the ValidationError escapes `_fail`
    and `expand` (it is raised outside the bare retry's try): the caller gets a pydantic error instead of a
    PipelineError, and the run stays `running` with its credit `held` until the reaper. Image failures are
    not model calls, so ModelCall's own check (which catches the chat path's surrogates first) is never
    reached."""

    def answer(task: str, request: dict[str, Any]) -> dict[str, Any]:
        if task == "image":
            return {"prompt": "A poster of a regular expression", "caption": "Regexes", "headline": "Regex"}
        return ANSWERS[task]

    user, idea = _new_idea(client)
    raised: Exception | None = None
    with _ImageErrorServer(answer, model=SERVED_MODEL, usage=USAGE) as server:
        renderer = OpenAIImageRenderer(api_key="sk-test", base_url=server.base_url, max_retries=0)
        with Pipeline(
            client,
            provider=OpenAIProvider(base_url=server.base_url, max_retries=0),
            image_renderer=lambda draft: renderer.render(draft.prompt),
        ) as pipeline:
            try:
                pipeline.expand(user, idea_id=idea, format="image")
            except Exception as exc:
                raised = exc
    assert _settled(db, user) == ("failed", "released")
    assert isinstance(raised, PipelineError), repr(raised)
