"""The credit charge at its limit (charge_at_limit migration): time-ordered ledger ids, a charge that is one
statement with no lock taken first, and every answer of consume_expansion_credit kept on the new paths."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ._db import Db
from .conftest import migrated_database, project_before
from .test_concurrency import _race

CHARGE_AT_LIMIT = "20260101002300"


def _sqlstate(call: Any) -> str | None:
    try:
        call()
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def _consume(db: Db, user: uuid.UUID | None, key: uuid.UUID | None = None) -> str:
    with db.as_service() as conn:
        row = conn.execute("select public.consume_expansion_credit(%s, %s)", (user, key)).fetchone()
        assert row is not None
        return str(row[0])


def _charges(db: Db, user: uuid.UUID) -> list[tuple[uuid.UUID, str, str, Any]]:
    with db.admin() as conn:
        return [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute(
                "select id, credit_type, status, created_at from public.credit_charges "
                "where user_id = %s order by created_at",
                (user,),
            )
        ]


def _millis(value: uuid.UUID) -> int:
    """The 48-bit unix-millisecond field of a version 7 UUID."""
    return value.int >> 80


# -- time-ordered ids --------------------------------------------------------------------------------------------
def test_ledger_ids_are_version_7_and_carry_the_charge_time(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=1, paid_credits_remaining=3)
    for _ in range(4):
        _consume(db, user)
    charges = _charges(db, user)
    assert len(charges) == 4
    for charge_id, _, _, created_at in charges:
        assert charge_id.version == 7
        assert charge_id.variant == uuid.RFC_4122
        # The id's default and created_at's are read from the clock microseconds apart.
        assert abs(_millis(charge_id) - int(created_at.timestamp() * 1000)) <= 1


def test_uuidv7_ids_increase_with_time_and_keep_74_random_bits(db: Db) -> None:
    made: list[uuid.UUID] = []
    with db.as_service() as conn:
        for _ in range(12):
            # 2 ms apart: later ids sort after earlier ones (within one millisecond the order is random).
            row = conn.execute("select pg_sleep(0.002), private.uuidv7()").fetchone()
            assert row is not None
            made.append(row[1])
        burst = [r[0] for r in conn.execute("select private.uuidv7() from generate_series(1, 1000)")]
    assert made == sorted(made)
    assert len({_millis(u) for u in made}) == len(made)

    assert len(set(burst)) == len(burst)
    assert {u.version for u in burst} == {7}
    assert {u.variant for u in burst} == {uuid.RFC_4122}
    # Bits 0-47 are the time, 48-51 the version, 64-65 the variant: the other 74 are random, so across a
    # thousand ids each of them is seen both set and clear (a fixed one would be a 2**-999 accident).
    fixed = set(range(48)) | {48, 49, 50, 51, 64, 65}
    for bit in set(range(128)) - fixed:
        seen = {(u.int >> (127 - bit)) & 1 for u in burst}
        assert seen == {0, 1}, f"bit {bit} never changes"


def test_random_ids_made_before_the_migration_stay_and_their_keys_still_replay(
    fresh_database: Any, project: Any, tmp_path: Path
) -> None:
    from idea_expansion.local import find_project
    from idea_expansion.local.migrations import migrate

    before = project_before(project, CHARGE_AT_LIMIT, tmp_path)
    url = migrated_database(fresh_database, before, prefix="ie_ledger_ids", seed=False)
    db = Db(url)
    try:
        user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
        key = uuid.uuid4()
        assert _consume(db, user, key) == "paid"
        [(old_id, *_)] = _charges(db, user)
        assert old_id.version == 4

        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, find_project(project.root))

        assert _consume(db, user, key) == "paid"  # the old charge answers its key
        assert _consume(db, user) == "paid"
        ids = [charge_id for charge_id, *_ in _charges(db, user)]
        assert ids[0] == old_id
        assert [i.version for i in ids] == [4, 7]
        assert db.usage(user)["paid_credits_remaining"] == 1
    finally:
        db.close()


# -- the charge is one statement ---------------------------------------------------------------------------------
def _lock_usage_calls(db: Db, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
    """How often private.lock_usage (the SELECT ... FOR UPDATE of the balance) ran for these statements."""
    with db.counting_calls() as (conn, calls):
        for statement, params in statements:
            conn.execute(statement, params)
        return calls()["private.lock_usage"]


def test_a_charge_locks_nothing_before_its_one_statement(db: Db) -> None:
    consume = "select public.consume_expansion_credit(%s, %s)"
    user = db.create_user(free_expansions_remaining=3, paid_credits_remaining=3)
    assert _lock_usage_calls(db, [(consume, (user, None))]) == 0
    assert _lock_usage_calls(db, [(consume, (user, uuid.uuid4()))]) == 0
    paying = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
    assert _lock_usage_calls(db, [(consume, (paying, None)), (consume, (paying, uuid.uuid4()))]) == 0
    # What is still done under the lock: the last free credit, and a known key.
    last = db.create_user(free_expansions_remaining=1)
    assert _lock_usage_calls(db, [(consume, (last, None))]) == 1
    key = uuid.uuid4()
    _consume(db, user, key)
    assert _lock_usage_calls(db, [(consume, (user, key))]) == 1


# -- every answer kept on the new paths ---------------------------------------------------------------------------
def test_free_first_then_paid_across_the_last_free_credit(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=2, paid_credits_remaining=2)
    answers = [_consume(db, user) for _ in range(4)]
    assert answers == ["free", "free", "paid", "paid"]
    assert _sqlstate(lambda: _consume(db, user)) == "PT402"
    usage = db.usage(user)
    assert (usage["free_expansions_remaining"], usage["paid_credits_remaining"]) == (0, 0)
    assert (usage["total_expansions_used"], usage["total_free_used"], usage["total_paid_used"]) == (4, 2, 2)
    assert [c[1] for c in _charges(db, user)] == ["free", "free", "paid", "paid"]


def test_a_held_credit_is_free_first_too_and_leaves_the_totals(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=1, paid_credits_remaining=1)
    with db.as_service() as conn:
        held = [
            conn.execute("select private.take_credit(%s, %s, false)", (user, uuid.uuid4())).fetchone() for _ in range(2)
        ]
    assert held == [("free",), ("paid",)]
    usage = db.usage(user)
    assert (usage["free_expansions_remaining"], usage["paid_credits_remaining"]) == (0, 0)
    assert usage["total_expansions_used"] == 0
    assert [(c[1], c[2]) for c in _charges(db, user)] == [("free", "held"), ("paid", "held")]


def test_a_replayed_key_answers_its_first_charge_with_or_without_credits_left(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=2)
    key = uuid.uuid4()
    assert _consume(db, user, key) == "paid"
    assert _consume(db, user, key) == "paid"  # credits left: the attempt is refused by the ledger and undone
    assert db.usage(user)["paid_credits_remaining"] == 1
    assert _consume(db, user) == "paid"
    assert _consume(db, user, key) == "paid"  # none left: still the first answer, not PT402
    assert _sqlstate(lambda: _consume(db, user, uuid.uuid4())) == "PT402"
    usage = db.usage(user)
    assert (usage["paid_credits_remaining"], usage["total_paid_used"]) == (0, 2)
    assert db.scalar("select count(*) from public.credit_charges where idempotency_key = %s", (key,)) == 1


@pytest.mark.parametrize("credits_left", [0, 2])
def test_a_key_held_or_released_by_a_run_is_55000_and_charges_nothing(db: Db, credits_left: int) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=1 + credits_left)
    key = uuid.uuid4()
    with db.as_service() as conn:
        conn.execute("select private.take_credit(%s, %s, false)", (user, key))
    before = db.usage(user)
    assert _sqlstate(lambda: _consume(db, user, key)) == "55000"
    with db.as_service() as conn:
        conn.execute("select private.settle_credit(%s, %s, false)", (user, key))
    assert _sqlstate(lambda: _consume(db, user, key)) == "55000"
    after = db.usage(user)
    assert after["paid_credits_remaining"] == before["paid_credits_remaining"] + 1  # only the release
    assert after["total_expansions_used"] == before["total_expansions_used"] == 0
    assert db.scalar("select count(*) from public.credit_charges where user_id = %s", (user,)) == 1


def test_an_unknown_or_null_user_is_refused_and_nothing_is_written(db: Db) -> None:
    # The ledger has no foreign key to users (its rows outlive them); the missing balance row refuses.
    ghost = uuid.uuid4()
    assert _sqlstate(lambda: _consume(db, ghost)) == "PT404"
    assert _sqlstate(lambda: _consume(db, ghost, uuid.uuid4())) == "PT404"
    assert db.scalar("select count(*) from public.credit_charges where user_id = %s", (ghost,)) == 0
    assert _sqlstate(lambda: _consume(db, None)) == "22004"
    assert _sqlstate(lambda: _consume(db, None, uuid.uuid4())) == "22004"


# -- races on the new paths ---------------------------------------------------------------------------------------
def test_concurrent_calls_with_one_new_key_and_credits_left_charge_once(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=100)
    key = uuid.uuid4()

    def replay(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("select public.consume_expansion_credit(%s, %s)", (user, key)).fetchone()
        assert row is not None
        return str(row[0])

    assert Counter(_race(db.url, 32, 5, replay)) == {"paid": 160}
    usage = db.usage(user)
    assert (usage["paid_credits_remaining"], usage["total_expansions_used"]) == (99, 1)
    assert db.scalar("select count(*) from public.credit_charges where idempotency_key = %s", (key,)) == 1


def test_concurrent_calls_with_new_keys_spend_exactly_the_balance_free_first(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=3, paid_credits_remaining=37)

    def charge(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("select public.consume_expansion_credit(%s, %s)", (user, uuid.uuid4())).fetchone()
        assert row is not None
        return str(row[0])

    assert Counter(_race(db.url, 32, 5, charge)) == {"free": 3, "paid": 37, "PT402": 120}
    usage = db.usage(user)
    assert (usage["free_expansions_remaining"], usage["paid_credits_remaining"]) == (0, 0)
    assert (usage["total_free_used"], usage["total_paid_used"]) == (3, 37)
    assert [c[1] for c in _charges(db, user)] == ["free"] * 3 + ["paid"] * 37
