"""The credit functions, end to end, through the roles PostgREST would use."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

from ._db import Db


def consume(db: Db, user_id: uuid.UUID, key: uuid.UUID | None = None) -> str:
    with db.as_service() as conn:
        row = conn.execute("select public.consume_expansion_credit(%s, %s)", (user_id, key)).fetchone()
        assert row is not None
        return str(row[0])


def grant(db: Db, user_id: uuid.UUID, credits: int, amount: str, reference: str | None = None) -> uuid.UUID:
    with db.as_service() as conn:
        row = conn.execute(
            "select public.add_paid_credits(%s, %s, %s::numeric, %s, 'test-admin', 'note')",
            (user_id, credits, amount, reference),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


def has_credits(db: Db, user_id: uuid.UUID, *, role: str = "service_role", caller: uuid.UUID | None = None) -> bool:
    with db.request(role, caller) as conn:
        row = conn.execute("select public.check_user_has_credits(%s)", (user_id,)).fetchone()
        assert row is not None
        return bool(row[0])


def test_guide_lifecycle(db: Db) -> None:
    """Sign up with 5 free, use them, be refused, buy 5 for $5.00, use them, be refused again."""
    user = db.create_user()
    start = db.usage(user)
    assert (start["free_expansions_remaining"], start["paid_credits_remaining"]) == (5, 0)
    assert has_credits(db, user)

    for expected_free in (4, 3, 2, 1, 0):
        assert consume(db, user) == "free"
        assert db.usage(user)["free_expansions_remaining"] == expected_free

    assert not has_credits(db, user)
    with pytest.raises(psycopg.Error) as refused:
        consume(db, user)
    assert refused.value.sqlstate == "PT402"
    assert refused.value.diag.message_primary == "No credits remaining"

    receipt_id = grant(db, user, 5, "5.00", "BMC-LIFECYCLE-1")
    with db.admin() as conn:
        receipt = conn.execute(
            "select user_id, amount_usd, credits_purchased, bmc_reference, status, verified_by, verified_at "
            "from public.payment_receipts where id = %s",
            (receipt_id,),
        ).fetchone()
    assert receipt is not None
    assert receipt[:6] == (user, Decimal("5.00"), 5, "BMC-LIFECYCLE-1", "verified", "test-admin")
    assert receipt[6] is not None
    assert db.usage(user)["paid_credits_remaining"] == 5
    assert has_credits(db, user)

    for expected_paid in (4, 3, 2, 1, 0):
        assert consume(db, user) == "paid"
        assert db.usage(user)["paid_credits_remaining"] == expected_paid

    with pytest.raises(psycopg.Error) as refused_again:
        consume(db, user)
    assert refused_again.value.sqlstate == "PT402"

    end = db.usage(user)
    assert end["free_expansions_remaining"] == 0
    assert end["paid_credits_remaining"] == 0
    assert end["total_expansions_used"] == 10
    assert end["total_free_used"] == 5
    assert end["total_paid_used"] == 5
    assert db.scalar("select count(*) from public.credit_charges where user_id = %s", (user,)) == 10


def test_refusal_changes_nothing(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=0)
    before = db.usage(user)
    with pytest.raises(psycopg.Error) as refused:
        consume(db, user)
    assert refused.value.sqlstate == "PT402"
    assert refused.value.diag.message_hint is not None
    assert db.usage(user) == before
    assert db.scalar("select count(*) from public.credit_charges where user_id = %s", (user,)) == 0


def test_check_is_false_never_null_without_usage_row(db: Db) -> None:
    user = db.create_user()
    with db.admin() as conn:
        conn.execute("delete from public.usage_tracking where user_id = %s", (user,))
    assert has_credits(db, user) is False
    assert has_credits(db, uuid.uuid4()) is False


def test_consume_without_usage_row_is_an_error_not_paid(db: Db) -> None:
    user = db.create_user()
    with db.admin() as conn:
        conn.execute("delete from public.usage_tracking where user_id = %s", (user,))
    for who in (user, uuid.uuid4()):
        with pytest.raises(psycopg.Error) as missing:
            consume(db, who)
        assert missing.value.sqlstate == "PT404"


def test_null_user_is_rejected(db: Db) -> None:
    with pytest.raises(psycopg.Error) as null_user:
        consume(db, None)  # type: ignore[arg-type]
    assert null_user.value.sqlstate == "22004"
    with pytest.raises(psycopg.Error) as null_check, db.as_service() as conn:
        conn.execute("select public.check_user_has_credits(null)")
    assert null_check.value.sqlstate == "22004"


def test_idempotency_key_returns_first_answer_and_charges_once(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=1, paid_credits_remaining=1)
    key = uuid.uuid4()
    assert consume(db, user, key) == "free"
    assert consume(db, user, key) == "free"
    assert consume(db, user, key) == "free"
    usage = db.usage(user)
    assert (usage["free_expansions_remaining"], usage["paid_credits_remaining"]) == (0, 1)
    assert usage["total_expansions_used"] == 1
    # a new key charges the paid credit; replaying it still answers 'paid' even with nothing left
    second = uuid.uuid4()
    assert consume(db, user, second) == "paid"
    assert consume(db, user, second) == "paid"
    assert db.usage(user)["total_expansions_used"] == 2


def test_idempotency_key_is_scoped_to_its_user(db: Db) -> None:
    """Another user's key neither blocks nor answers for this user: it is simply a new key here."""
    first, second = db.create_user(), db.create_user(free_expansions_remaining=0, paid_credits_remaining=1)
    key = uuid.uuid4()
    assert consume(db, first, key) == "free"
    assert consume(db, second, key) == "paid"
    assert consume(db, second, key) == "paid"
    assert db.usage(second)["total_expansions_used"] == 1
    assert db.usage(first)["total_expansions_used"] == 1


def test_same_reference_grants_once(db: Db) -> None:
    user = db.create_user()
    first = grant(db, user, 5, "5.00", "BMC-ONCE")
    again = grant(db, user, 5, "5.00", "  BMC-ONCE ")
    assert first == again
    assert db.usage(user)["paid_credits_remaining"] == 5
    assert db.scalar("select count(*) from public.payment_receipts where bmc_reference = 'BMC-ONCE'") == 1


@pytest.mark.parametrize(
    ("credits", "amount", "same_user"),
    [(6, "5.00", True), (5, "6.00", True), (5, "5.00", False)],
    ids=["other-credits", "other-amount", "other-user"],
)
def test_same_reference_with_different_details_conflicts(db: Db, credits: int, amount: str, same_user: bool) -> None:
    user = db.create_user()
    reference = f"BMC-{uuid.uuid4().hex[:8]}"
    grant(db, user, 5, "5.00", reference)
    target = user if same_user else db.create_user()
    before = db.usage(target)
    with pytest.raises(psycopg.Error) as conflict:
        grant(db, target, credits, amount, reference)
    assert conflict.value.sqlstate == "23505"
    assert reference in conflict.value.diag.message_primary  # type: ignore[operator]
    assert db.usage(target) == before


def test_grants_with_different_references_are_independent(db: Db) -> None:
    user = db.create_user()
    first = grant(db, user, 2, "2.00", f"BMC-{uuid.uuid4().hex}")
    assert grant(db, user, 3, "3.00", f"BMC-{uuid.uuid4().hex}") != first
    assert db.usage(user)["paid_credits_remaining"] == 5


@pytest.mark.parametrize(
    ("credits", "amount", "fragment"),
    [
        (0, "5.00", "credits must be a positive integer"),
        (-1, "5.00", "credits must be a positive integer"),
        (None, "5.00", "credits must be a positive integer"),
        (5, "0", "amount_usd must be a positive amount"),
        (5, "-5", "amount_usd must be a positive amount"),
        (5, None, "amount_usd must be a positive amount"),
        (5, "5.001", "at most two decimal places"),
        (5, "100000000", "below 100000000"),
    ],
)
def test_grant_rejects_bad_amounts_and_changes_nothing(
    db: Db, credits: int | None, amount: str | None, fragment: str
) -> None:
    user = db.create_user()
    before = db.usage(user)
    with pytest.raises(psycopg.Error) as bad:
        grant(db, user, credits, amount, f"BMC-BAD-{uuid.uuid4().hex[:6]}")  # type: ignore[arg-type]
    assert bad.value.sqlstate == "22023"
    assert fragment in (bad.value.diag.message_primary or "")
    assert db.usage(user) == before
    assert db.scalar("select count(*) from public.payment_receipts where user_id = %s", (user,)) == 0


def test_grant_to_unknown_user_fails_clearly(db: Db) -> None:
    with pytest.raises(psycopg.Error) as unknown:
        grant(db, uuid.uuid4(), 5, "5.00", f"BMC-{uuid.uuid4().hex[:6]}")
    assert unknown.value.sqlstate == "PT404"
    assert unknown.value.diag.message_primary == "User not found"


def test_grant_without_usage_row_leaves_no_receipt(db: Db) -> None:
    user = db.create_user()
    with db.admin() as conn:
        conn.execute("delete from public.usage_tracking where user_id = %s", (user,))
    with pytest.raises(psycopg.Error) as missing:
        grant(db, user, 5, "5.00", f"BMC-{uuid.uuid4().hex[:6]}")
    assert missing.value.sqlstate == "PT404"
    assert db.scalar("select count(*) from public.payment_receipts where user_id = %s", (user,)) == 0


def test_user_checks_own_credits_but_not_anothers(db: Db) -> None:
    me, other = db.create_user(), db.create_user(free_expansions_remaining=0)
    assert has_credits(db, me, role="authenticated", caller=me) is True
    with pytest.raises(psycopg.Error) as denied:
        has_credits(db, other, role="authenticated", caller=me)
    assert denied.value.sqlstate == "42501"


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize(
    "call",
    [
        "select public.consume_expansion_credit(%(user)s)",
        "select public.consume_expansion_credit(%(user)s, gen_random_uuid())",
        "select public.add_paid_credits(%(user)s, 5, 5.00, 'BMC-X', 'me', null)",
    ],
    ids=["consume", "consume-with-key", "add_paid_credits"],
)
def test_service_only_functions_refuse_users_and_anon(db: Db, role: str, call: str) -> None:
    user = db.create_user()
    before = db.usage(user)
    with (
        pytest.raises(psycopg.Error) as denied,
        db.request(role, user if role == "authenticated" else None) as conn,
    ):
        conn.execute(call, {"user": user})
    assert denied.value.sqlstate == "42501"
    assert db.usage(user) == before


def test_anon_cannot_check_credits(db: Db) -> None:
    user = db.create_user()
    with pytest.raises(psycopg.Error) as denied:
        has_credits(db, user, role="anon")
    assert denied.value.sqlstate == "42501"
