"""Attack round 13: the charge_in_one_frame migration (a paying user's charge in consume_expansion_credit's own
frame, the balance row's updated_at trigger that fires only when the writer has not stamped now() itself).

Hostile users and concurrency: what anon and authenticated can reach, the free-first order when a charge waits
behind a release, a grant, another charge or the same key, keys racing at the free -> paid boundary, one key for
two users, many calls in one transaction, a unique violation the key handler must not swallow, and updated_at
after every kind of write."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from ._db import Db, apply_request_context
from .test_concurrency import _race

CONSUME = "select public.consume_expansion_credit(%s, %s)"
HOLD = "select private.take_credit(%s, %s, false)"
RELEASE = "select private.settle_credit(%s, %s, false)"
# What the charging transaction itself sees of the balance it holds the lock on, after its write.
AFTER = "select free_expansions_remaining, updated_at = now() from public.usage_tracking where user_id = %s"

Call = Callable[[psycopg.Connection[Any]], Any]


def _answer(conn: psycopg.Connection[Any], user: uuid.UUID | None, key: uuid.UUID | None) -> str:
    """consume_expansion_credit's answer, or the SQLSTATE it raised (in a savepoint: the transaction goes on)."""
    try:
        with conn.transaction():
            row = conn.execute(CONSUME, (user, key)).fetchone()
    except psycopg.Error as exc:
        return str(exc.sqlstate)
    assert row is not None
    return str(row[0])


def _ledger(db: Db, user: uuid.UUID) -> list[tuple[Any, ...]]:
    """The user's charges in the order they were taken: created_at is clock_timestamp() evaluated under the
    balance lock (ids are UUIDv7, ordered only to the millisecond, with random bits within it)."""
    with db.admin() as conn:
        return conn.execute(
            "select idempotency_key, credit_type, status from public.credit_charges "
            "where user_id = %s order by created_at, id",
            (user,),
        ).fetchall()


def _balance(db: Db, user: uuid.UUID) -> tuple[int, ...]:
    usage = db.usage(user)
    return tuple(
        int(usage[name])
        for name in (
            "free_expansions_remaining",
            "paid_credits_remaining",
            "total_free_used",
            "total_paid_used",
            "total_expansions_used",
        )
    )


def _in_service_transaction(conn: psycopg.Connection[Any], call: Call) -> Any:
    try:
        with conn.transaction():
            apply_request_context(conn, "service_role", None)
            return call(conn)
    except psycopg.Error as exc:
        return exc.sqlstate


def _behind(db: Db, first: Call, second: Call, *, commit: bool = True) -> tuple[Any, Any]:
    """`first` in an open transaction on one connection, then `second` on another until it is seen waiting for
    the first's locks; then the first commits (or rolls back). Both as the service role. Returns both results
    (the second's SQLSTATE when it raised)."""
    with (
        psycopg.connect(db.url) as a,
        psycopg.connect(db.url, autocommit=True) as b,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        apply_request_context(a, "service_role", None)
        first_result = first(a)
        future: Future[Any] = pool.submit(_in_service_transaction, b, second)
        deadline = time.monotonic() + 15
        while a.info.backend_pid not in (db.scalar("select pg_blocking_pids(%s)", (b.info.backend_pid,)) or []):
            assert not future.done(), f"the second call did not wait for the first: {future.result()!r}"
            assert time.monotonic() < deadline, "the second call never waited for the first"
            time.sleep(0.005)
        if commit:
            a.commit()
        else:
            a.rollback()
        return first_result, future.result(timeout=30)


def _scalar(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


# What anon and authenticated can reach -------------------------------------------------------------------------


def test_anon_and_authenticated_still_reach_no_charge_and_no_balance_write(db: Db) -> None:
    victim = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
    attacker = db.create_user()
    attempts = [
        (CONSUME, (victim, None)),
        (CONSUME, (victim, uuid.uuid4())),
        (CONSUME, (attacker, None)),
        (HOLD, (victim, uuid.uuid4())),
        ("select private.take_credit(%s, %s, true)", (attacker, None)),
        (RELEASE, (victim, uuid.uuid4())),
        ("select private.lock_usage(%s)", (attacker,)),
        ("select public.set_updated_at()", ()),
        ("update public.usage_tracking set paid_credits_remaining = 99 where user_id = %s", (attacker,)),
        ("update public.usage_tracking set updated_at = now() where user_id = %s", (attacker,)),
        (
            "insert into public.credit_charges (user_id, idempotency_key, credit_type) values (%s, %s, 'paid')",
            (attacker, uuid.uuid4()),
        ),
    ]
    for role, who in (("anon", None), ("authenticated", attacker)):
        for statement, params in attempts:
            with db.request(role, who, commit=False) as conn, pytest.raises(psycopg.Error) as refused:
                conn.execute(statement, params)
            assert refused.value.sqlstate == "42501", (role, statement, refused.value)
    # The grants are what they were before the migration: the owner and the service role, nobody else.
    with db.admin() as conn:
        acls = dict(
            conn.execute(
                "select p.oid::regprocedure::text, p.proacl::text from pg_catalog.pg_proc p "
                "where p.oid in ('public.consume_expansion_credit(uuid, uuid)'::regprocedure, "
                "'private.take_credit(uuid, uuid, boolean)'::regprocedure, 'public.set_updated_at()'::regprocedure)"
            ).fetchall()
        )
        # What the client roles hold on the two tables, privilege by privilege (PostgreSQL 17 added MAINTAIN to
        # the owner's and service_role's ACL strings, so those strings differ between versions).
        client_grants = set(
            conn.execute(
                "select c.oid::regclass::text, r.rolname, a.privilege_type "
                "from pg_catalog.pg_class c cross join lateral pg_catalog.aclexplode(c.relacl) a "
                "join pg_catalog.pg_roles r on r.oid = a.grantee "
                "where c.oid in ('public.usage_tracking'::regclass, 'public.credit_charges'::regclass) "
                "and r.rolname in ('anon', 'authenticated')"
            ).fetchall()
        )
    assert acls == {
        "consume_expansion_credit(uuid,uuid)": "{postgres=X/postgres,service_role=X/postgres}",
        "private.take_credit(uuid,uuid,boolean)": "{postgres=X/postgres,service_role=X/postgres}",
        "set_updated_at()": "{postgres=X/postgres}",
    }
    assert client_grants == {
        ("usage_tracking", "authenticated", "SELECT"),
        ("credit_charges", "authenticated", "SELECT"),
    }
    assert _balance(db, victim) == (0, 3, 0, 0, 0)
    assert _ledger(db, victim) == []
    assert _ledger(db, attacker) == []


# A charge waiting behind another transaction decides on the balance that transaction left ------------------------


@pytest.mark.parametrize("keyed", [False, True])
def test_a_paying_charge_waiting_behind_a_release_takes_the_free_credit_released(db: Db, keyed: bool) -> None:
    # A paying user (no free credit left, paid ones left) with a run in flight holding a free credit.
    user = db.create_user(free_expansions_remaining=1, paid_credits_remaining=3)
    run = uuid.uuid4()
    with db.as_service() as conn:
        assert _scalar(conn, HOLD, (user, run)) == "free"
    assert _balance(db, user)[:2] == (0, 3)

    # The run fails: its release gives the free credit back while a charge (which saw a paying user) waits.
    released, answer = _behind(
        db,
        lambda a: _scalar(a, RELEASE, (user, run)),
        lambda b: _scalar(b, CONSUME, (user, uuid.uuid4() if keyed else None)),
    )
    assert (released, answer) == ("free", "free")
    assert _balance(db, user) == (0, 3, 1, 0, 1)


@pytest.mark.parametrize("keyed", [False, True])
def test_a_charge_waiting_behind_the_last_paid_credit_is_refused_not_overdrawn(db: Db, keyed: bool) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=1)
    first, second = _behind(
        db,
        lambda a: _scalar(a, CONSUME, (user, None)),
        lambda b: _scalar(b, CONSUME, (user, uuid.uuid4() if keyed else None)),
    )
    assert (first, second) == ("paid", "PT402")
    assert _balance(db, user) == (0, 0, 0, 1, 1)
    assert len(_ledger(db, user)) == 1


@pytest.mark.parametrize("keyed", [False, True])
def test_a_charge_waiting_behind_a_grant_to_a_user_without_credit_takes_the_granted_credit(db: Db, keyed: bool) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=0)
    grant = "select public.add_paid_credits(%s, 2, 4.00, %s)"
    _, answer = _behind(
        db,
        lambda a: _scalar(a, grant, (user, f"bmc-{uuid.uuid4()}")),
        lambda b: _scalar(b, CONSUME, (user, uuid.uuid4() if keyed else None)),
    )
    assert answer == "paid"
    assert _balance(db, user) == (0, 1, 0, 1, 1)


@pytest.mark.parametrize("commit", [True, False])
def test_a_key_waiting_behind_its_own_uncommitted_first_charge_is_charged_once(db: Db, commit: bool) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
    key = uuid.uuid4()
    first, second = _behind(
        db,
        lambda a: _scalar(a, CONSUME, (user, key)),
        lambda b: _scalar(b, CONSUME, (user, key)),
        commit=commit,
    )
    # Committed: the second is the first's repeat. Rolled back: the second is the key's only charge.
    assert (first, second) == ("paid", "paid")
    assert _balance(db, user) == (0, 2, 0, 1, 1)
    assert _ledger(db, user) == [(key, "paid", "captured")]


def test_a_key_waiting_behind_a_run_that_holds_it_is_in_flight_then_released_never_charged(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
    run = uuid.uuid4()
    held, answer = _behind(db, lambda a: _scalar(a, HOLD, (user, run)), lambda b: _scalar(b, CONSUME, (user, run)))
    assert (held, answer) == ("paid", "55000")
    assert _balance(db, user) == (0, 2, 0, 0, 0)  # only the hold
    with db.as_service() as conn:
        assert _scalar(conn, RELEASE, (user, run)) == "paid"
    with db.as_service() as conn:
        assert _answer(conn, user, run) == "55000"  # released: the fast statement's attempt is undone
    assert _balance(db, user) == (0, 3, 0, 0, 0)
    assert _ledger(db, user) == [(run, "paid", "released")]


# Races ---------------------------------------------------------------------------------------------------------


def test_keys_racing_at_the_free_to_paid_boundary_each_get_one_answer_and_one_charge(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=2, paid_credits_remaining=3)
    keys = [uuid.uuid4() for _ in range(8)]
    calls = itertools.count()

    def charge(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, str]:
        key = keys[next(calls) % len(keys)]
        return key, _answer(conn, user, key)

    answers: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
    for key, answer in _race(db.url, 32, 4, charge):
        answers[key].add(answer)
    # Every caller of one key got the same answer; 2 keys got the free credits, 3 the paid ones.
    assert all(len(seen) == 1 for seen in answers.values()), answers
    assert Counter(next(iter(seen)) for seen in answers.values()) == {"free": 2, "paid": 3, "PT402": 3}
    assert _balance(db, user) == (0, 0, 2, 3, 5)
    ledger = _ledger(db, user)
    assert [credit_type for _, credit_type, _ in ledger] == ["free", "free", "paid", "paid", "paid"]
    assert {key: {credit_type} for key, credit_type, _ in ledger} == {
        key: seen for key, seen in answers.items() if seen != {"PT402"}
    }


def test_one_key_racing_for_two_users_charges_each_user_once(db: Db) -> None:
    paying = db.create_user(free_expansions_remaining=0, paid_credits_remaining=4)
    free = db.create_user(free_expansions_remaining=1, paid_credits_remaining=0)
    key = uuid.uuid4()
    calls = itertools.count()

    def charge(conn: psycopg.Connection[Any]) -> tuple[str, str]:
        which, user = ("paying", paying) if next(calls) % 2 else ("free", free)
        return which, _answer(conn, user, key)

    assert Counter(_race(db.url, 16, 4, charge)) == {("paying", "paid"): 32, ("free", "free"): 32}
    assert _balance(db, paying) == (0, 3, 0, 1, 1)
    assert _balance(db, free) == (0, 0, 1, 0, 1)
    assert _ledger(db, paying) == [(key, "paid", "captured")]
    assert _ledger(db, free) == [(key, "free", "captured")]


def test_no_paid_credit_is_taken_while_a_free_one_is_left_under_releases_grants_and_charges(db: Db) -> None:
    # Six runs in flight hold free credits; their releases, grants and charges (with and without keys) race.
    user = db.create_user(free_expansions_remaining=6, paid_credits_remaining=10)
    runs = [uuid.uuid4() for _ in range(6)]
    with db.as_service() as conn:
        assert [_scalar(conn, HOLD, (user, run)) for run in runs] == ["free"] * 6
    calls = itertools.count()

    def work(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        n = next(calls)
        if n % 10 == 3 and n // 10 < len(runs):
            return ("released", _scalar(conn, RELEASE, (user, runs[n // 10])))
        if n % 10 == 7:
            conn.execute("select public.add_paid_credits(%s, 2, 2.00, %s)", (user, f"bmc-{uuid.uuid4()}"))
            return ("granted",)
        answer = _answer(conn, user, uuid.uuid4() if n % 2 else None)
        if answer not in ("free", "paid"):
            return (answer,)
        # Under the balance lock this transaction now holds: the balance its charge left, and its stamp.
        row = conn.execute(AFTER, (user,)).fetchone()
        assert row is not None
        return (answer, row[0], row[1])

    outcomes = _race(db.url, 32, 3, work)
    grants = sum(1 for o in outcomes if o == ("granted",))
    assert sum(1 for o in outcomes if o == ("released", "free")) == 6
    paid = [o for o in outcomes if o[0] == "paid"]
    free = [o for o in outcomes if o[0] == "free"]
    assert all(left == 0 for _, left, _ in paid), paid  # a paid credit only once no free one was left
    assert all(stamped for _, _, stamped in paid + free)
    assert {o[0] for o in outcomes} <= {"released", "granted", "free", "paid", "PT402"}
    balance = _balance(db, user)
    assert balance[0] + len(free) == 6
    assert balance[1] + len(paid) == 10 + 2 * grants
    assert balance[2:] == (len(free), len(paid), len(free) + len(paid))
    ledger = _ledger(db, user)
    assert Counter(status for _, _, status in ledger) == {"released": 6, "captured": len(free) + len(paid)}


# One transaction, many calls -----------------------------------------------------------------------------------


def test_many_calls_in_one_transaction_charge_once_per_key_and_stamp_the_row(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=1, paid_credits_remaining=2)
    k1, k2, k3, k4 = (uuid.uuid4() for _ in range(4))
    with db.as_service() as conn:
        answers = [
            _answer(conn, user, k1),  # the last free credit (take_credit, under the lock)
            _answer(conn, user, k1),  # repeat: the fast statement's paid attempt is undone
            _answer(conn, user, None),  # paid, fast statement
            _answer(conn, user, k2),  # paid, fast statement with the key
            _answer(conn, user, k2),
            _answer(conn, user, k1),
            _answer(conn, user, k3),  # nothing left
            _answer(conn, user, None),
        ]
        assert conn.execute(AFTER, (user,)).fetchone() == (0, True)
        # A charge undone by the caller's own savepoint gives its credit back, and its key is new again.
        conn.execute("select public.add_paid_credits(%s, 1, 1.00, %s)", (user, f"bmc-{uuid.uuid4()}"))
        conn.execute("savepoint s")
        assert _answer(conn, user, k4) == "paid"
        conn.execute("rollback to savepoint s")
        answers.append(_answer(conn, user, k4))
        answers.append(_answer(conn, user, k4))
    assert answers == ["free", "free", "paid", "paid", "paid", "free", "PT402", "PT402", "paid", "paid"]
    assert _balance(db, user) == (0, 0, 1, 3, 4)
    assert [(k, t) for k, t, _ in _ledger(db, user)] == [(k1, "free"), (None, "paid"), (k2, "paid"), (k4, "paid")]


# The key handler's exception block -----------------------------------------------------------------------------


@pytest.mark.parametrize("free_left", [0, 2])
def test_an_unrelated_unique_violation_inside_the_key_block_is_raised_not_taken_for_a_repeat(
    db: Db, free_left: int
) -> None:
    user = db.create_user(free_expansions_remaining=free_left, paid_credits_remaining=2)
    with db.as_service() as conn:
        assert _answer(conn, user, uuid.uuid4()) in ("free", "paid")
    existing = db.scalar("select id from public.credit_charges where user_id = %s", (user,))
    before = _balance(db, user)
    # The next ledger row, and only that one, collides with an existing one on the primary key (in a
    # transaction rolled back): a handler that took it for a repeated key would try again and succeed.
    setup = (
        "create sequence pg_temp.collide; grant usage on sequence pg_temp.collide to service_role; "
        "alter table public.credit_charges alter column id set default "
        f"case when nextval('pg_temp.collide') = 1 then '{existing}'::uuid else private.uuidv7() end"
    )
    for key in (uuid.uuid4(), None):
        with db.request("service_role", setup=setup, commit=False) as conn:
            with pytest.raises(psycopg.errors.UniqueViolation) as refused:
                conn.execute(CONSUME, (user, key))
            assert refused.value.diag.constraint_name == "credit_charges_pkey", key
    assert _balance(db, user) == before
    assert len(_ledger(db, user)) == 1


# Answers for who is not there ----------------------------------------------------------------------------------


def test_no_user_no_usage_row_and_null_keep_their_answers_with_and_without_a_key(db: Db) -> None:
    somebody = db.create_user(free_expansions_remaining=0, paid_credits_remaining=2)
    key = uuid.uuid4()
    with db.as_service() as conn:
        assert _answer(conn, somebody, key) == "paid"
    with db.as_service() as conn:
        # Someone else's key says nothing about them to a user who is not there.
        assert [_answer(conn, uuid.uuid4(), k) for k in (None, key, uuid.uuid4())] == ["PT404"] * 3
        assert [_answer(conn, None, k) for k in (None, key)] == ["22004"] * 2
    assert _balance(db, somebody) == (0, 1, 0, 1, 1)


# updated_at ----------------------------------------------------------------------------------------------------


def test_every_write_path_leaves_the_writing_transactions_now_and_a_repeat_writes_nothing(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=2, paid_credits_remaining=2)
    run1, run2, key = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stale = "2001-01-01T00:00:00Z"
    by_hand = "update public.usage_tracking set total_free_used = total_free_used where user_id = %s"
    writes: list[tuple[str, list[tuple[str, tuple[Any, ...]]]]] = [
        ("a hold", [(HOLD, (user, run1))]),
        ("a release", [(RELEASE, (user, run1))]),
        ("a free charge, fast pass", [(CONSUME, (user, None))]),
        ("the last free charge, then a paid hold", [(CONSUME, (user, key)), (HOLD, (user, run2))]),
        ("a capture", [("select private.settle_credit(%s, %s, true)", (user, run2))]),
        ("a paid charge, then an UPDATE by hand", [(CONSUME, (user, None)), (by_hand, (user,))]),
        ("a grant", [("select public.add_paid_credits(%s, 1, 1.00, %s)", (user, f"bmc-{uuid.uuid4()}"))]),
    ]
    stamped = "select updated_at = now() from public.usage_tracking where user_id = %s"
    for what, statements in writes:
        with db.admin() as conn:
            conn.execute("set local session_replication_role = replica")
            conn.execute("update public.usage_tracking set updated_at = %s where user_id = %s", (stale, user))
        with db.as_service() as conn:
            for statement, params in statements:
                conn.execute(statement, params)
            assert _scalar(conn, stamped, (user,)) is True, what
    assert _balance(db, user) == (0, 1, 2, 2, 4)
    # A repeated key writes nothing: the fast statement's attempt (which stamped the row) is undone.
    stamp = db.usage(user)["updated_at"]
    with db.as_service() as conn:
        assert _answer(conn, user, key) == "free"
    assert db.usage(user)["updated_at"] == stamp
    assert _balance(db, user) == (0, 1, 2, 2, 4)
