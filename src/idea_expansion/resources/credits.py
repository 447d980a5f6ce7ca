"""`client.credits`: balances, charging and grants, all decided by the database's credit functions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from uuid import UUID

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Eq, Rpc, Select
from ..types import CreditCharge, CreditType, PaymentReceipt, Usage
from ..types.ids import IdLike, parse_id
from ..types.params import MAX_GRANT, email_key
from ..types.reports import Refund
from ._base import AsyncResource, Operations, Steps, SyncResource, operation, paginated, to_model
from ._pagination import PageData


class _CreditOperations(Operations):
    """Credits: 5 free per user, then paid credits an admin grants after a payment."""

    @operation
    def check(self, user_id: IdLike | None = None) -> Steps[bool]:
        """Whether the user has a credit left (a user client may only ask about itself)."""
        owner = self._owner(user_id)
        return bool((yield Rpc("check_user_has_credits", {"p_user_id": owner})))

    @operation
    def consume(self, user_id: IdLike, *, idempotency_key: IdLike | None = None) -> Steps[CreditType]:
        """Spend one credit, free first. With `idempotency_key` (the execution id) a repeat returns the
        first answer and charges nothing more, so it is safe to retry. Keys are the user's own: another
        user's key is a new key here. Service client.

        Raises:
            InsufficientCreditsError: no credits left (nothing changes).
            NotFoundError: the user has no usage record.
        """
        args = {
            "p_user_id": parse_id(user_id, "user id"),
            "p_idempotency_key": None if idempotency_key is None else parse_id(idempotency_key, "idempotency key"),
        }
        return CreditType((yield Rpc("consume_expansion_credit", args)))

    @operation
    def grant(
        self,
        email_or_id: str | UUID,
        credits: int,
        amount_usd: Decimal | str,
        reference: str | None = None,
        *,
        verified_by: str = "admin",
        notes: str | None = None,
    ) -> Steps[PaymentReceipt]:
        """Record a verified payment and add its credits, in one transaction. A payment has a `reference`
        (required): the same reference again, trimmed and in any case, returns the first receipt and grants
        nothing. One grant adds at most 100,000 credits, and a paid balance holds at most 1,000,000.
        Service client.

        Raises:
            InvalidRequestError: credits not from 1 to 100,000, amount not positive with at most 2 decimals,
                a blank or missing reference, or a balance that would exceed its bound.
            NotFoundError: no such user.
            ConflictError: the reference was already granted with different details.
        """
        if isinstance(credits, bool) or not isinstance(credits, int) or not 0 < credits <= MAX_GRANT:
            raise InvalidRequestError(
                f"credits must be a positive integer of at most {MAX_GRANT} per grant, not {credits!r}"
            )
        amount = _amount(amount_usd)
        user_id = yield from self._user_id(email_or_id)
        receipt_id = yield (
            Rpc(
                "add_paid_credits",
                {
                    "p_user_id": user_id,
                    "p_credits": credits,
                    "p_amount_usd": amount,
                    "p_bmc_reference": reference,
                    "p_verified_by": verified_by,
                    "p_notes": notes,
                },
            )
        )
        request = Select("payment_receipts", [Eq("id", parse_id(receipt_id))])
        return (yield from self._one(PaymentReceipt, request, "receipt"))

    @operation
    def balance(self, user_id: IdLike | None = None) -> Steps[Usage]:
        """The user's credits and lifetime counters."""
        request = Select("usage_tracking", [Eq("user_id", self._owner(user_id))])
        return (yield from self._one(Usage, request, "usage record"))

    @paginated
    def history(
        self, user_id: IdLike | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Steps[PageData[PaymentReceipt]]:
        """The user's payment receipts, newest first, a page at a time (iterate the page for all)."""
        filters = [Eq("user_id", self._owner(user_id))]
        return (
            yield from self._keyset_page(
                PaymentReceipt,
                "payment_receipts",
                filters,
                sort="created_at",
                kind=datetime,
                limit=limit,
                cursor=cursor,
            )
        )

    @paginated
    def charges(
        self, user_id: IdLike | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Steps[PageData[CreditCharge]]:
        """The credits the user spent, newest first, a page at a time (iterate the page for all)."""
        filters = [Eq("user_id", self._owner(user_id))]
        return (
            yield from self._keyset_page(
                CreditCharge, "credit_charges", filters, sort="created_at", kind=datetime, limit=limit, cursor=cursor
            )
        )

    @operation
    def refund(self, receipt_id: IdLike, *, note: str | None = None) -> Steps[Refund]:
        """Refund a payment: the receipt becomes `refunded` and its still-unused paid credits are taken
        back (never below zero; `credits_removed` says how many). Service client.

        Raises:
            NotFoundError: no such receipt. APIError (55000): already refunded.
        """
        rows = yield Rpc(
            "refund_payment", {"p_receipt_id": parse_id(receipt_id, "receipt id"), "p_note": note}, returns="rows"
        )
        return to_model(Refund, rows[0])

    def _user_id(self, email_or_id: str | UUID) -> Steps[UUID]:
        if isinstance(email_or_id, UUID):
            return email_or_id
        if not isinstance(email_or_id, str):
            raise InvalidRequestError(f"a user is an id or an e-mail address, not {email_or_id!r}")
        if "@" not in email_or_id:
            return parse_id(email_or_id, "user id or e-mail")
        key = email_key(email_or_id)
        rows = [] if key is None else (yield Select("users", [Eq("email", key)], columns=("id",)))
        if not rows:
            raise NotFoundError(f"user not found: {email_or_id}", code="PGRST116")
        return parse_id(rows[0]["id"])


class Credits(_CreditOperations, SyncResource):
    """Credits: 5 free per user, then paid credits an admin grants after a payment."""


class AsyncCredits(_CreditOperations, AsyncResource):
    """Credits, on the async client."""


_AMOUNT_LIMIT = Decimal(10**8)
"""payment_receipts.amount_usd is numeric(10, 2): below 100,000,000."""


def _amount(value: Decimal | str) -> Decimal:
    if isinstance(value, float):
        raise InvalidRequestError("amount_usd must be a Decimal or a string such as '5.00', not a float")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidRequestError(f"amount_usd must be a number such as 5.00, not {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidRequestError(f"amount_usd must be positive, not {value!r}")
    if amount >= _AMOUNT_LIMIT:  # before quantize, which cannot hold so many digits (InvalidOperation)
        raise InvalidRequestError(f"amount_usd must be below {_AMOUNT_LIMIT} (as add_paid_credits says), not {value!r}")
    if amount != amount.quantize(Decimal("0.01")):
        raise InvalidRequestError(f"amount_usd must have at most two decimal places, not {value!r}")
    return amount
