"""`client.expansions`: the one door to the run lifecycle the database owns.

Every transition is one database function (see `supabase/migrations/*_run_lifecycle.sql`):
start (holds a credit, fixes the idea), claim, record_stage, record_evaluation, finish (captures or
releases the credit, stores the output), record_delivery (after the capture), reap and status.
Parameters and results are pydantic models; unknown fields are errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Json, Rpc
from ..types import Stage
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
from ._base import Resource, to_model

__all__ = ["Expansions"]


class Expansions(Resource):
    """Expansion runs, as a state machine in Postgres: queued -> running -> completed | partial | failed.
    Service client, except `status`, which a user client may call for its own runs."""

    def start(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: str | None = None,
        idempotency_key: IdLike | None = None,
        enqueue: bool = False,
        public: bool = False,
    ) -> ExpansionStarted:
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
        started = self._call(
            "start_expansion",
            p_user_id=params.user_id,
            p_idea_id=params.idea_id,
            p_format=None if params.format is None else params.format.value,
            p_idempotency_key=params.idempotency_key,
            p_enqueue=params.enqueue,
            p_public=params.public,
        )
        return to_model(ExpansionStarted, started)

    def claim(self, worker_id: str) -> ExpansionStarted | None:
        """Claim the oldest queued run that holds its credit (each run is claimed exactly once), or None."""
        if not worker_id or len(worker_id) > 200:
            raise InvalidRequestError("worker_id must be 1-200 characters")
        claimed = self._call("claim_next_expansion", p_worker_id=worker_id)
        return None if claimed is None else to_model(ExpansionStarted, claimed)

    def record_stage(self, execution_id: IdLike, stage: Stage | str) -> None:
        """A running run's stage and heartbeat (only needed for runs longer than about a minute)."""
        self._call("record_expansion_stage", p_execution_id=parse_id(execution_id, "execution id"), p_stage=str(stage))

    def record_evaluation(self, execution_id: IdLike, evaluation: Evaluation) -> None:
        """The judge's verdict on the run's idea (also a heartbeat). `finish` can carry it instead."""
        self._call(
            "record_expansion_evaluation",
            p_execution_id=parse_id(execution_id, "execution id"),
            p_score=evaluation.score,
            p_reasoning=evaluation.reasoning,
        )

    def finish(self, execution_id: IdLike, outcome: ExpansionOutcome) -> ExpansionResult:
        """End a running run in one transaction: completed/partial capture the held credit and store the
        output (and blog post); failed releases it. The judge's verdict is kept either way.

        Raises:
            ConflictError (PT409): the run is not running (finished, reaped), or holds no credit.
            InvalidRequestError: the outcome does not fit the run (format, content, errors).
        """
        if not isinstance(outcome, ExpansionOutcome):
            raise InvalidRequestError(f"outcome must be an ExpansionOutcome, not {type(outcome).__name__}")
        arguments = outcome.arguments()
        if arguments["p_content"] is not None:
            arguments["p_content"] = Json(arguments["p_content"])
        finished = self._call("finish_expansion", p_execution_id=parse_id(execution_id, "execution id"), **arguments)
        return to_model(ExpansionResult, finished)

    def record_delivery(
        self,
        execution_id: IdLike,
        step: DeliveryStep,
        *,
        error_message: str | None = None,
        publication_url: str | None = None,
        publication_metadata: dict[str, Any] | None = None,
    ) -> ExpansionResult:
        """What became of a side effect after the capture: a publication (`publication_url`), or a failure
        (`error_message`), which makes the run partial. Charges nothing either way."""
        if step not in ("image", "publish"):
            raise InvalidRequestError(f"a delivery step is 'image' or 'publish', not {step!r}")
        if (error_message is None) == (publication_url is None):
            raise InvalidRequestError("give either error_message (it failed) or publication_url (it was published)")
        delivered = self._call(
            "record_expansion_delivery",
            p_execution_id=parse_id(execution_id, "execution id"),
            p_step=step,
            p_error_message=None if error_message is None else error_message[:2000],
            p_publication_url=publication_url,
            p_publication_metadata=None if publication_metadata is None else Json(publication_metadata),
        )
        return to_model(ExpansionResult, delivered)

    def reap(self, stale_after: timedelta = STALE_AFTER) -> list[UUID]:
        """Fail running runs whose heartbeat is older than `stale_after` (error_step timeout) and release
        their credits. Returns the reaped execution ids."""
        if not isinstance(stale_after, timedelta) or stale_after < timedelta(0):
            raise InvalidRequestError(f"stale_after must be a non-negative timedelta, not {stale_after!r}")
        ids = self._rpc(Rpc("reap_stale_expansions", {"p_stale_after": stale_after}, returns="values"))
        return [parse_id(i) for i in ids or []]

    def status(self, execution_id: IdLike) -> ExpansionStatus:
        """A run's state and output ids, in one call.

        Raises:
            NotFoundError: no such run, or not the caller's.
        """
        found = self._call("expansion_status", p_execution_id=parse_id(execution_id, "execution id"))
        if found is None:
            raise NotFoundError("execution not found (or not visible to this client)", code="PGRST116")
        return to_model(ExpansionStatus, found)

    def _call(self, function: str, **arguments: Any) -> Any:
        return self._rpc(Rpc(function, arguments))
