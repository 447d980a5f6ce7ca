"""`client.reports`: the database guide's common queries, computed by report functions (service role)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from ..backends._base import Rpc
from ..types.reports import (
    ExecutionSummaryRow,
    FailedExpansionsRow,
    PaymentRow,
    PaymentSummaryRow,
    RecentExecutionRow,
    TopUserRow,
    UserSummaryRow,
)
from ._base import Resource, to_model

R = TypeVar("R", bound=BaseModel)


class Reports(Resource):
    """Admin reports. Service client only (users get PermissionDeniedError)."""

    def users(self) -> list[UserSummaryRow]:
        """Every user with their idea and output counts and credits."""
        return self._report(UserSummaryRow, "report_user_summary")

    def top_users(self, limit: int = 10) -> list[TopUserRow]:
        """Users by number of outputs."""
        return self._report(TopUserRow, "report_top_users", p_limit=limit)

    def failed(self) -> list[FailedExpansionsRow]:
        """Failed expansions per user and failing step."""
        return self._report(FailedExpansionsRow, "report_failed_expansions")

    def payments(self) -> list[PaymentRow]:
        """Every payment receipt, newest first."""
        return self._report(PaymentRow, "report_payments")

    def payment_summary(self) -> list[PaymentSummaryRow]:
        """Verified payments per user."""
        return self._report(PaymentSummaryRow, "report_payment_summary")

    def executions(self, limit: int = 10) -> list[RecentExecutionRow]:
        """The most recent runs."""
        return self._report(RecentExecutionRow, "report_recent_executions", p_limit=limit)

    def execution_summary(self) -> list[ExecutionSummaryRow]:
        """Runs per user: total, completed, partial, failed, tokens."""
        return self._report(ExecutionSummaryRow, "report_execution_summary")

    def _report(self, model: type[R], function: str, **args: Any) -> list[R]:
        return [to_model(model, row) for row in self._rpc(Rpc(function, args, returns="rows")) or []]
