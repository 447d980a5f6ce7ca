"""`client.credits`: balances, charging and grants, all decided by the database's credit functions."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from uuid import UUID

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Eq, Order, Rpc, Select
from ..types import CreditCharge, CreditType, PaymentReceipt, Usage
from ..types.ids import IdLike, parse_id
from ..types.params import MAX_GRANT, email_key
from ..types.reports import Refund
from ._base import Resource, to_model


class Credits(Resource):
    """Credits: 5 free per user, then paid credits an admin grants after a payment."""

    def check(self, user_id: IdLike | None = None) -> bool:
        """Whether the user has a credit left (a user client may only ask about itself)."""
        owner = self._owner(user_id)
        return bool(self._rpc(Rpc("check_user_has_credits", {"p_user_id": owner})))

    def consume(self, user_id: IdLike, *, idempotency_key: IdLike | None = None) -> CreditType:
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
        return CreditType(self._rpc(Rpc("consume_expansion_credit", args)))

    def grant(
        self,
        email_or_id: str | UUID,
        credits: int,
        amount_usd: Decimal | str,
        reference: str | None = None,
        *,
        verified_by: str = "admin",
        notes: str | None = None,
    ) -> PaymentReceipt:
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
        user_id = self._user_id(email_or_id)
        receipt_id = self._rpc(
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
        return self._one(PaymentReceipt, Select("payment_receipts", [Eq("id", parse_id(receipt_id))]), "receipt")

    def balance(self, user_id: IdLike | None = None) -> Usage:
        """The user's credits and lifetime counters."""
        return self._one(Usage, Select("usage_tracking", [Eq("user_id", self._owner(user_id))]), "usage record")

    def history(self, user_id: IdLike | None = None) -> list[PaymentReceipt]:
        """The user's payment receipts, newest first."""
        return self._many(
            PaymentReceipt,
            Select("payment_receipts", [Eq("user_id", self._owner(user_id))], order=[Order("created_at", True)]),
        )

    def charges(self, user_id: IdLike | None = None, *, limit: int = 100) -> list[CreditCharge]:
        """The credits the user spent, newest first."""
        return self._many(
            CreditCharge,
            Select(
                "credit_charges", [Eq("user_id", self._owner(user_id))], order=[Order("created_at", True)], limit=limit
            ),
        )

    def refund(self, receipt_id: IdLike, *, note: str | None = None) -> Refund:
        """Refund a payment: the receipt becomes `refunded` and its still-unused paid credits are taken
        back (never below zero; `credits_removed` says how many). Service client.

        Raises:
            NotFoundError: no such receipt. APIError (55000): already refunded.
        """
        rows = self._rpc(
            Rpc("refund_payment", {"p_receipt_id": parse_id(receipt_id, "receipt id"), "p_note": note}, returns="rows")
        )
        return to_model(Refund, rows[0])

    def _user_id(self, email_or_id: str | UUID) -> UUID:
        if isinstance(email_or_id, UUID):
            return email_or_id
        if "@" not in email_or_id:
            return parse_id(email_or_id, "user id or e-mail")
        key = email_key(email_or_id)
        rows = [] if key is None else self._rows(Select("users", [Eq("email", key)], columns=("id",)))
        if not rows:
            raise NotFoundError(f"user not found: {email_or_id}", code="PGRST116")
        return parse_id(rows[0]["id"])


def _amount(value: Decimal | str) -> Decimal:
    if isinstance(value, float):
        raise InvalidRequestError("amount_usd must be a Decimal or a string such as '5.00', not a float")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidRequestError(f"amount_usd must be a number such as 5.00, not {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidRequestError(f"amount_usd must be positive, not {value!r}")
    if amount != amount.quantize(Decimal("0.01")):
        raise InvalidRequestError(f"amount_usd must have at most two decimal places, not {value!r}")
    return amount
