"""`client.expansions`: the one door to the run lifecycle the database owns.

Every transition is one database function (see `supabase/migrations/*_run_lifecycle.sql`):
start (holds a credit, fixes the idea), claim, record_stage, record_evaluation, finish (captures or
releases the credit, stores the output), record_delivery (after the capture), reap and status.
Parameters and results are pydantic models; unknown fields are errors."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Json, Rpc
from ..types import Execution, Stage
from ..types.expansions import (
    STALE_AFTER,
    DeliveryStep,
    Evaluation,
    ExpansionOutcome,
    ExpansionResult,
    ExpansionStart,
    ExpansionStarted,
    ExpansionStatus,
)
from ..types.ids import IdLike, parse_id
from ..types.params import parse_params
from ._base import AsyncResource, Operations, Steps, SyncResource, enum_value, operation, to_model

__all__ = ["Expansions"]


class _ExpansionOperations(Operations):
    """Expansion runs, as a state machine in Postgres: queued -> running -> completed | partial | failed.
    Service client, except `status`, which a user client may call for its own runs."""

    @operation
    def start(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: str | None = None,
        idempotency_key: IdLike | None = None,
        enqueue: bool = False,
        public: bool = False,
    ) -> Steps[ExpansionStarted]:
        """Hold one credit and create the run on a fixed idea, atomically.

        Raises:
            InsufficientCreditsError: no credit left (nothing is created).
            NotFoundError: no such idea for the user, or (without `idea_id`) no pending idea at all.
            InvalidRequestError: an unknown format, or an idea that is not pending.
            ConflictError: the idea is already in a run. (Keys are per user: another user's key is
                simply a new key here.)
        """
        params = parse_params(
            ExpansionStart,
            user_id=parse_id(user_id, "user id"),
            idea_id=None if idea_id is None else parse_id(idea_id, "idea id"),
            format=format,
            idempotency_key=None if idempotency_key is None else parse_id(idempotency_key, "idempotency key"),
            enqueue=enqueue,
            public=public,
        )
        started = yield self._call(
            "start_expansion",
            p_user_id=params.user_id,
            p_idea_id=params.idea_id,
            p_format=None if params.format is None else params.format.value,
            p_idempotency_key=params.idempotency_key,
            p_enqueue=params.enqueue,
            p_public=params.public,
        )
        return to_model(ExpansionStarted, started)

    @operation
    def enqueue(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: str | None = None,
        idempotency_key: IdLike | None = None,
        public: bool = False,
    ) -> Steps[Execution]:
        """Queue a run for the workers: `start(..., enqueue=True)`, returning the queued execution. Its
        credit is held and its idea fixed now, so queueing beyond the balance is refused with
        `InsufficientCreditsError` just as running would be."""
        started = yield from self.start.steps(
            user_id, idea_id=idea_id, format=format, idempotency_key=idempotency_key, enqueue=True, public=public
        )
        return started.execution

    @operation
    def claim(self, worker_id: str) -> Steps[ExpansionStarted | None]:
        """Claim the oldest queued run that holds its credit (each run is claimed exactly once), or None."""
        if not isinstance(worker_id, str) or not worker_id or len(worker_id) > 200:
            raise InvalidRequestError("worker_id must be 1-200 characters")
        claimed = yield self._call("claim_next_expansion", p_worker_id=worker_id)
        return None if claimed is None else to_model(ExpansionStarted, claimed)

    @operation
    def record_stage(self, execution_id: IdLike, stage: Stage | str) -> Steps[None]:
        """A running run's stage and heartbeat (only needed for runs longer than about a minute)."""
        execution = parse_id(execution_id, "execution id")
        yield self._call("record_expansion_stage", p_execution_id=execution, p_stage=enum_value(Stage, stage, "stage"))

    @operation
    def record_evaluation(self, execution_id: IdLike, evaluation: Evaluation) -> Steps[None]:
        """The judge's verdict on the run's idea (also a heartbeat). `finish` can carry it instead."""
        evaluation = _checked(Evaluation, evaluation, "evaluation")
        yield self._call(
            "record_expansion_evaluation",
            p_execution_id=parse_id(execution_id, "execution id"),
            p_score=evaluation.score,
            p_reasoning=evaluation.reasoning,
        )

    @operation
    def finish(self, execution_id: IdLike, outcome: ExpansionOutcome) -> Steps[ExpansionResult]:
        """End a running run in one transaction: completed/partial capture the held credit and store the
        output (and blog post); failed releases it. The judge's verdict is kept either way.

        Raises:
            ConflictError (PT409): the run is not running (finished, reaped), or holds no credit.
            InvalidRequestError: the outcome does not fit the run (format, content, errors), or a run whose
                calls fell back to the offline templates is not partial (such a run's credit is released).
        """
        outcome = _checked(ExpansionOutcome, outcome, "outcome")
        arguments = outcome.arguments()
        if arguments["p_content"] is not None:
            arguments["p_content"] = Json(arguments["p_content"])
        arguments["p_model_calls"] = Json(arguments["p_model_calls"])
        execution = parse_id(execution_id, "execution id")
        finished = yield self._call("finish_expansion", p_execution_id=execution, **arguments)
        return to_model(ExpansionResult, finished)

    @operation
    def record_delivery(
        self,
        execution_id: IdLike,
        step: DeliveryStep,
        *,
        error_message: str | None = None,
        publication_url: str | None = None,
        publication_metadata: dict[str, Any] | None = None,
    ) -> Steps[ExpansionResult]:
        """What became of a side effect after the capture: a publication (`publication_url`), or a failure
        (`error_message`), which makes the run partial. Charges nothing either way."""
        if step not in ("image", "publish"):
            raise InvalidRequestError(f"a delivery step is 'image' or 'publish', not {step!r}")
        if (error_message is None) == (publication_url is None):
            raise InvalidRequestError("give either error_message (it failed) or publication_url (it was published)")
        for name, text in (("error_message", error_message), ("publication_url", publication_url)):
            if text is not None and not isinstance(text, str):
                raise InvalidRequestError(f"{name} must be a string, not {type(text).__name__}")
        if publication_metadata is not None:
            _check_json_object(publication_metadata, "publication_metadata")
        delivered = yield self._call(
            "record_expansion_delivery",
            p_execution_id=parse_id(execution_id, "execution id"),
            p_step=step,
            p_error_message=None if error_message is None else error_message[:2000],
            p_publication_url=publication_url,
            p_publication_metadata=None if publication_metadata is None else Json(publication_metadata),
        )
        return to_model(ExpansionResult, delivered)

    @operation
    def reap(self, stale_after: timedelta = STALE_AFTER) -> Steps[list[UUID]]:
        """Fail running runs whose heartbeat is older than `stale_after` (error_step timeout) and release
        their credits. Returns the reaped execution ids."""
        if not isinstance(stale_after, timedelta) or stale_after < timedelta(0):
            raise InvalidRequestError(f"stale_after must be a non-negative timedelta, not {stale_after!r}")
        ids = yield Rpc("reap_stale_expansions", {"p_stale_after": stale_after}, returns="values")
        return [parse_id(i) for i in ids or []]

    @operation
    def status(self, execution_id: IdLike) -> Steps[ExpansionStatus]:
        """A run's state and output ids, in one call.

        Raises:
            NotFoundError: no such run, or not the caller's.
        """
        found = yield self._call("expansion_status", p_execution_id=parse_id(execution_id, "execution id"))
        if found is None:
            raise NotFoundError("execution not found (or not visible to this client)", code="PGRST116")
        return to_model(ExpansionStatus, found)

    @staticmethod
    def _call(function: str, **arguments: Any) -> Rpc:
        return Rpc(function, arguments)


M = TypeVar("M", Evaluation, ExpansionOutcome)


def _checked(model: type[M], value: M, what: str) -> M:
    """`value`, validated again: an instance made with `model_construct` skipped the model's rules, and
    would otherwise reach the database (or fail on a missing field) unchecked."""
    if not isinstance(value, model):
        raise InvalidRequestError(f"{what} must be an {model.__name__}, not {type(value).__name__}")
    return parse_params(model, **dict(value))


def _check_json_object(value: dict[str, Any], what: str) -> None:
    """Refuse what cannot be stored as a JSON object now, rather than as a TypeError while it is sent."""
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"{what} must be JSON-serialisable: {exc}") from None


class Expansions(_ExpansionOperations, SyncResource):
    """Expansion runs, as a state machine in Postgres (see the operations)."""


class AsyncExpansions(_ExpansionOperations, AsyncResource):
    """Expansion runs, on the async client: start (enqueue), status and the rest, awaited."""
