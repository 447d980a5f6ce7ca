"""A paying user's charge in one PL/pgSQL frame (charge_in_one_frame migration): consume_expansion_credit calls
no other function for it, the balance row stamps itself instead of going through its trigger, and every answer
and every order (free first, then paid) is kept, alone and under races."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from typing import Any

import psycopg

from ._db import Db
from .test_concurrency import _race

CONSUME = "select public.consume_expansion_credit(%s, %s)"


def _function_calls(db: Db, statements: list[tuple[str, tuple[Any, ...]]]) -> Counter[str]:
    """The PL/pgSQL functions these statements called (as the service role, in one request), by name."""
    with db.counting_calls() as (conn, calls):
        for statement, params in statements:
            conn.execute(statement, params)
        return calls()


def _ledger_types(db: Db, user: uuid.UUID) -> list[str]:
    """The user's charges' credit types in the order they were made: by created_at (clock_timestamp(), in
    microseconds), not by id, whose time part is only to the millisecond."""
    with db.admin() as conn:
        rows = conn.execute(
            "select credit_type from public.credit_charges where user_id = %s order by created_at, id", (user,)
        )
        return [str(row[0]) for row in rows]


def test_a_paying_user_is_charged_without_calling_any_other_function(db: Db) -> None:
    paying = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
    # The ledger row's id default (private.uuidv7) is the by-hand statement's call too.
    alone = {"public.consume_expansion_credit": 1, "private.uuidv7": 1}
    assert _function_calls(db, [(CONSUME, (paying, None))]) == alone
    assert _function_calls(db, [(CONSUME, (paying, uuid.uuid4()))]) == alone
    usage = db.usage(paying)
    assert (usage["paid_credits_remaining"], usage["total_expansions_used"], usage["total_paid_used"]) == (1, 2, 2)

    # Everyone else goes on to take_credit, which stamps the row too: the trigger is not called either.
    free = db.create_user(free_expansions_remaining=3, paid_credits_remaining=3)
    for key in (None, uuid.uuid4()):
        calls = _function_calls(db, [(CONSUME, (free, key))])
        assert calls == {**alone, "private.take_credit": 1}, key
    assert _ledger_types(db, free) == ["free", "free"]


def test_updated_at_is_the_writing_transactions_now_whoever_writes(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=1, paid_credits_remaining=0)
    stale = "2001-01-01T00:00:00Z"
    writes: list[tuple[str, str, tuple[Any, ...], int]] = [
        # (what, statement, params, calls of the trigger function expected)
        ("the last free credit, under the lock", CONSUME, (user, None), 0),
        ("a grant", "select public.add_paid_credits(%s, 2, 10.00, %s)", (user, f"bmc-{uuid.uuid4()}"), 1),
        ("a paid charge with a key", CONSUME, (user, uuid.uuid4()), 0),
        ("a paid charge", CONSUME, (user, None), 0),
        (
            "an UPDATE by hand",
            "update public.usage_tracking set paid_credits_remaining = 7 where user_id = %s",
            (user,),
            1,
        ),
        (
            "an UPDATE by hand with a stamp of its own",
            "update public.usage_tracking set paid_credits_remaining = 6, updated_at = %s where user_id = %s",
            ("1999-12-31T00:00:00Z", user),  # not the stale value the row starts from: a new, wrong one
            1,
        ),
        (
            "an UPDATE by hand stamping now()",
            "update public.usage_tracking set paid_credits_remaining = 5, updated_at = now() where user_id = %s",
            (user,),
            0,
        ),
    ]
    stamped = "select updated_at = now() from public.usage_tracking where user_id = %s"
    for what, statement, params, trigger_calls in writes:
        with db.admin() as conn:  # a stale stamp to start from, written past the trigger
            conn.execute("set local session_replication_role = replica")
            conn.execute("update public.usage_tracking set updated_at = %s where user_id = %s", (stale, user))
        with db.counting_calls() as (conn, calls):
            conn.execute(statement, params)
            assert calls()["public.set_updated_at"] == trigger_calls, what
            assert conn.execute(stamped, (user,)).fetchone() == (True,), what
    usage = db.usage(user)
    assert (usage["free_expansions_remaining"], usage["paid_credits_remaining"]) == (0, 5)
    assert (usage["total_free_used"], usage["total_paid_used"]) == (1, 2)


def test_a_repeated_key_gives_back_the_credit_its_attempt_took(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
    key = uuid.uuid4()
    with db.as_service() as conn:
        answers = [conn.execute(CONSUME, (user, key)).fetchone() for _ in range(3)]  # one transaction
    assert answers == [("paid",)] * 3
    assert _function_calls(db, [(CONSUME, (user, key))])["private.lock_usage"] == 1
    usage = db.usage(user)
    assert (usage["paid_credits_remaining"], usage["total_expansions_used"], usage["total_paid_used"]) == (2, 1, 1)
    assert db.scalar("select count(*) from public.credit_charges where user_id = %s", (user,)) == 1


def test_free_credits_go_first_when_charges_race_with_and_without_keys(db: Db) -> None:
    for keyed in (False, True):
        user = db.create_user(free_expansions_remaining=3, paid_credits_remaining=37)

        def charge(conn: psycopg.Connection[Any], user: uuid.UUID = user, keyed: bool = keyed) -> str:
            row = conn.execute(CONSUME, (user, uuid.uuid4() if keyed else None)).fetchone()
            assert row is not None
            return str(row[0])

        assert Counter(_race(db.url, 32, 5, charge)) == {"free": 3, "paid": 37, "PT402": 120}, keyed
        usage = db.usage(user)
        assert (usage["free_expansions_remaining"], usage["paid_credits_remaining"]) == (0, 0)
        assert (usage["total_free_used"], usage["total_paid_used"], usage["total_expansions_used"]) == (3, 37, 40)
        assert _ledger_types(db, user) == ["free"] * 3 + ["paid"] * 37, keyed


def test_grants_racing_charges_are_spent_exactly_and_never_before_a_free_credit(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=3, paid_credits_remaining=0)
    calls = itertools.count()

    def work(conn: psycopg.Connection[Any]) -> str:
        if next(calls) % 8 == 0:  # one call in 8 is an admin's grant of 5 paid credits
            conn.execute("select public.add_paid_credits(%s, 5, 5.00, %s)", (user, f"bmc-{uuid.uuid4()}"))
            return "granted"
        row = conn.execute(CONSUME, (user, None)).fetchone()
        assert row is not None
        return str(row[0])

    outcomes = Counter(_race(db.url, 16, 4, work))
    assert outcomes["granted"] == 8
    assert outcomes["free"] == 3
    assert outcomes["paid"] + outcomes["PT402"] == 64 - 8 - 3
    usage = db.usage(user)
    # Every credit granted is either spent once or still there; nothing is charged twice or lost.
    assert usage["paid_credits_remaining"] + outcomes["paid"] == 8 * 5
    assert (usage["total_free_used"], usage["total_paid_used"]) == (3, outcomes["paid"])
    assert _ledger_types(db, user) == ["free"] * 3 + ["paid"] * outcomes["paid"]
