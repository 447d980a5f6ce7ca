"""Rows of the admin reports (the database guide's common queries) and of a refund."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = [
    "ExecutionSummaryRow",
    "FailedExpansionsRow",
    "PaymentRow",
    "PaymentSummaryRow",
    "RecentExecutionRow",
    "Refund",
    "TopUserRow",
    "UserSummaryRow",
]


class ReportRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UserSummaryRow(ReportRow):
    email: str
    ideas: int
    outputs: int
    free_remaining: int | None
    paid_remaining: int | None
    total_remaining: int
    """Free plus paid, summed in bigint by the database (never overflows)."""
    created_at: AwareDatetime


class TopUserRow(ReportRow):
    email: str
    output_count: int
    latest_output: AwareDatetime | None


class FailedExpansionsRow(ReportRow):
    email: str
    error_step: str | None
    failures: int
    latest: AwareDatetime | None


class PaymentRow(ReportRow):
    email: str
    """The payer's address, or `(deleted user <id>)` once they are deleted (their receipts stay, anonymised)."""
    amount_usd: Decimal
    credits_purchased: int
    bmc_reference: str | None
    status: str
    verified_at: AwareDatetime | None
    receipt_id: UUID


class PaymentSummaryRow(ReportRow):
    email: str
    """The payer's address, or `(deleted user <id>)`: one row per payer, deleted ones included."""
    payments: int
    total_credits: int
    total_spent: Decimal


class RecentExecutionRow(ReportRow):
    email: str
    format_chosen: str | None
    status: str
    tokens_used: int
    duration_seconds: int | None
    error_step: str | None
    error_message: str | None
    started_at: AwareDatetime
    execution_id: UUID


class ExecutionSummaryRow(ReportRow):
    email: str
    total_executions: int
    successful: int
    partial: int
    failed: int
    total_tokens: int


class Refund(ReportRow):
    """What `credits.refund` did."""

    receipt_id: UUID
    user_id: UUID
    """The payer; for a deleted user, the anonymous id their receipts were moved to (nothing is removed)."""
    credits_purchased: int
    credits_removed: int
    """Paid credits taken back; fewer than purchased when some were already spent."""
    paid_credits_remaining: int
