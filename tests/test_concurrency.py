"""Credits under real concurrency: many connections racing on one user's balance."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from ._db import Db, apply_request_context

CONNECTIONS = 64
ATTEMPTS = 3200


def _race(url: str, workers: int, per_worker: int, call: Callable[[psycopg.Connection[Any]], Any]) -> list[Any]:
    """`workers` connections, each released at the same moment, each making `per_worker` calls as the
    service role (one transaction per call). Returns every call's result or SQLSTATE."""
    barrier = threading.Barrier(workers)

    def worker() -> list[Any]:
        results: list[Any] = []
        with psycopg.connect(url, autocommit=True) as conn:
            barrier.wait()
            for _ in range(per_worker):
                try:
                    with conn.transaction():
                        apply_request_context(conn, "service_role", None)
                        results.append(call(conn))
                except psycopg.Error as exc:
                    results.append(exc.sqlstate)
        return results

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
        return [r for f in futures for r in f.result()]


def test_64_connections_3200_attempts_spend_exactly_the_balance(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=5, paid_credits_remaining=3)

    def attempt(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("select public.consume_expansion_credit(%s)", (user,)).fetchone()
        assert row is not None
        return str(row[0])

    results = _race(db.url, CONNECTIONS, ATTEMPTS // CONNECTIONS, attempt)
    outcome = Counter(results)
    print(f"\nconcurrency: {CONNECTIONS} connections, {len(results)} attempts -> {dict(outcome)}")
    assert len(results) == ATTEMPTS
    assert outcome == {"free": 5, "paid": 3, "PT402": ATTEMPTS - 8}

    usage = db.usage(user)
    assert usage["free_expansions_remaining"] == 0
    assert usage["paid_credits_remaining"] == 0
    assert usage["total_expansions_used"] == 8
    assert usage["total_free_used"] == 5
    assert usage["total_paid_used"] == 3
    with db.admin() as conn:
        order = [
            r[0]
            for r in conn.execute(
                "select credit_type from public.credit_charges where user_id = %s order by created_at",
                (user,),
            )
        ]
    assert order == ["free"] * 5 + ["paid"] * 3


def test_concurrent_replays_of_one_key_charge_once(db: Db) -> None:
    user = db.create_user(free_expansions_remaining=2)
    key = uuid.uuid4()

    def replay(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute("select public.consume_expansion_credit(%s, %s)", (user, key)).fetchone()
        assert row is not None
        return str(row[0])

    results = _race(db.url, 32, 5, replay)
    assert Counter(results) == {"free": 160}
    usage = db.usage(user)
    assert (usage["free_expansions_remaining"], usage["total_expansions_used"]) == (1, 1)
    assert db.scalar("select count(*) from public.credit_charges where idempotency_key = %s", (key,)) == 1


def test_concurrent_grants_of_one_reference_create_one_receipt(db: Db) -> None:
    user = db.create_user()
    reference = f"BMC-RACE-{uuid.uuid4().hex[:8]}"

    def grant(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "select public.add_paid_credits(%s, 5, 5.00, %s, 'racer', null)", (user, reference)
        ).fetchone()
        assert row is not None
        return str(row[0])

    results = _race(db.url, 32, 3, grant)
    assert len(results) == 96
    assert len(set(results)) == 1, Counter(results)
    assert db.scalar("select count(*) from public.payment_receipts where bmc_reference = %s", (reference,)) == 1
    assert db.usage(user)["paid_credits_remaining"] == 5


def test_concurrent_inserts_of_one_user_create_one_usage_row(db: Db) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.test"

    def insert(conn: psycopg.Connection[Any]) -> str:
        conn.execute("insert into public.users (email) values (%s)", (email,))
        return "inserted"

    results = _race(db.url, 16, 1, insert)
    assert Counter(results) == {"inserted": 1, "23505": 15}
    assert (
        db.scalar(
            "select count(*) from public.usage_tracking t join public.users u on u.id = t.user_id where u.email = %s",
            (email,),
        )
        == 1
    )
