"""`client.reports`: the database guide's common queries, computed by report functions (service role).

The reports of every user, failure or payment are paged like the listings (`SyncPage` / `AsyncPage`):
each report function takes a page size and the key of the last row handed out, and returns the rows
after it (supabase/migrations/20260101002600_report_pages.sql). Through the Supabase API a function's
rows are cut at max_rows (1000), so an unpaged report would stop there without a word; iterating a page
walks every page instead. `top_users` and `executions` are "the first n" (n at most 1000), one answer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from .._exceptions import InvalidRequestError
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
from ._base import (
    _API_MAX_ROWS,
    AsyncResource,
    Operations,
    Steps,
    SyncResource,
    check_limit,
    operation,
    paginated,
    to_models,
)
from ._pagination import PageData

__all__ = ["AsyncReports", "Reports"]

R = TypeVar("R", bound=BaseModel)


class _ReportOperations(Operations):
    """Admin reports. Service client only (users get PermissionDeniedError)."""

    @paginated
    def users(self, *, limit: int = 1000, cursor: str | None = None) -> Steps[PageData[UserSummaryRow]]:
        """Every user with their idea and output counts and credits, newest first, a page at a time
        (iterate the page for every user)."""
        return (yield from self._page(UserSummaryRow, "report_user_summary", ("created_at", "email"), limit, cursor))

    @operation
    def top_users(self, limit: int = 10) -> Steps[list[TopUserRow]]:
        """The `limit` users (1-1000) with the most outputs."""
        return (yield from self._top(TopUserRow, "report_top_users", limit))

    @paginated
    def failed(self, *, limit: int = 1000, cursor: str | None = None) -> Steps[PageData[FailedExpansionsRow]]:
        """Failed expansions per user and failing step, most failures first, a page at a time."""
        key = ("failures", "email", "error_step")
        return (yield from self._page(FailedExpansionsRow, "report_failed_expansions", key, limit, cursor))

    @paginated
    def payments(self, *, limit: int = 1000, cursor: str | None = None) -> Steps[PageData[PaymentRow]]:
        """Every payment receipt, most recently verified first, a page at a time."""
        key = ("verified_at", "receipt_id")
        return (yield from self._page(PaymentRow, "report_payments", key, limit, cursor))

    @paginated
    def payment_summary(self, *, limit: int = 1000, cursor: str | None = None) -> Steps[PageData[PaymentSummaryRow]]:
        """Verified payments per user, the biggest spender first, a page at a time."""
        key = ("total_spent", "email")
        return (yield from self._page(PaymentSummaryRow, "report_payment_summary", key, limit, cursor))

    @operation
    def executions(self, limit: int = 10) -> Steps[list[RecentExecutionRow]]:
        """The `limit` (1-1000) most recent runs."""
        return (yield from self._top(RecentExecutionRow, "report_recent_executions", limit))

    @paginated
    def execution_summary(
        self, *, limit: int = 1000, cursor: str | None = None
    ) -> Steps[PageData[ExecutionSummaryRow]]:
        """Runs per user (total, completed, partial, failed, tokens), the busiest first, a page at a time."""
        key = ("total_executions", "email")
        return (yield from self._page(ExecutionSummaryRow, "report_execution_summary", key, limit, cursor))

    @staticmethod
    def _top(model: type[R], function: str, limit: int) -> Steps[list[R]]:
        rows = yield Rpc(function, {"p_limit": check_limit(limit)}, returns="rows")
        return to_models(model, rows or [])

    @staticmethod
    def _page(model: type[R], function: str, key: Sequence[str], limit: int, cursor: str | None) -> Steps[PageData[R]]:
        """One page of a paged report: the rows after the cursor's, in the report's order, whose last
        columns `key` (the row's fields) are unique per row. As `_keyset_page` does, one row more than the
        page is asked for, so the last page is known to be the last (a page of 1000 is asked as it is)."""
        check_limit(limit)
        args: dict[str, Any] = {"p_limit": limit + (limit < _API_MAX_ROWS)}
        if cursor is not None:
            args |= {
                f"p_after_{name}": value for name, value in zip(key, _decode(cursor, function, model, key), strict=True)
            }
        rows = (yield Rpc(function, args, returns="rows")) or []
        items = to_models(model, rows[:limit])
        more = len(rows) > limit or len(rows) == _API_MAX_ROWS
        return PageData(items, _encode(function, items[-1], key) if more and items else None)


# -- report cursors ------------------------------------------------------------------------------------------------
def _encode(function: str, last: BaseModel, key: Sequence[str]) -> str:
    """The cursor after a report row: which report, and the row's key values (opaque to callers)."""
    values = last.model_dump(mode="json", include=set(key))
    raw = json.dumps({"k": function, "v": [values[name] for name in key]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, function: str, model: type[BaseModel], key: Sequence[str]) -> list[Any]:
    """The key values a cursor of this report holds, each validated as the row's field. Raises
    `InvalidRequestError` for anything but a cursor this report handed out."""
    try:
        if not isinstance(cursor, str) or len(cursor) > 2048:
            raise ValueError("not a cursor")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or data.get("k") != function:
            raise ValueError(f"a cursor of another listing (this is {function})")
        values = data["v"]
        if not isinstance(values, list) or len(values) != len(key):
            raise ValueError("a malformed key")
        decoded = [_field(model, name).validate_python(value) for name, value in zip(key, values, strict=True)]
        if any(isinstance(value, int) and not _BIGINT_MIN <= value <= _BIGINT_MAX for value in decoded):
            raise ValueError("a count beyond bigint")  # sent as numeric, it would match no report function
        return decoded
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError, ValidationError) as exc:
        raise InvalidRequestError(f"invalid cursor: {exc}") from None


_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


@functools.cache
def _field(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """Validates a cursor's value as the row's field `name` (an ISO time into a datetime, text into a
    Decimal or UUID), so the report function gets the parameter types it declares."""
    return TypeAdapter(model.model_fields[name].annotation or Any)


class Reports(_ReportOperations, SyncResource):
    """Admin reports. Service client only (users get PermissionDeniedError)."""


class AsyncReports(_ReportOperations, AsyncResource):
    """Admin reports, on the async client."""
