"""benchmarks/charge.py's `unguarded_key` line measures consume_expansion_credit's keyed charge less its
replay guard. That figure means something only while the benchmark's function runs the very statement the
real one runs, and charges as the real one does for a fresh key: both are checked here, so a later
migration that changes the charge fails this test rather than leave the line measuring something else."""

from __future__ import annotations

import re
import uuid

from benchmarks import charge as bench

from ._db import Db


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_unguarded_charge_is_the_real_keyed_statement(own_database: str) -> None:
    db = Db(own_database)
    try:
        with db.admin() as conn:
            conn.execute(bench.UNGUARDED_CHARGE)
            real = conn.execute(
                "select prosrc from pg_proc where oid = %s::regprocedure",
                ("public.consume_expansion_credit(uuid, uuid)",),
            ).fetchone()
        assert real is not None
        found = re.search(r"with charged as .*?into v_type;", _words(bench.UNGUARDED_CHARGE))
        assert found is not None
        statement = found.group(0)
        assert "p_idempotency_key" in statement
        # In the real function that statement is the body of the exception block that the benchmark's lacks.
        before_handler = _words(real[0]).split(" exception when unique_violation ", 1)
        assert len(before_handler) == 2
        assert statement in before_handler[0].rsplit(" begin ", 1)[1]

        # A fresh key charges alike: the same answer, the same balance change, the same ledger row.
        effects = []
        for function in ("public.consume_expansion_credit", "bench.charge_without_replay_guard"):
            user = db.create_user(free_expansions_remaining=0, paid_credits_remaining=3)
            key = uuid.uuid4()
            with db.admin() as conn:  # as pgbench runs both: the benchmark's schema is the superuser's own
                answer = conn.execute(f"select {function}(%s, %s)", (user, key)).fetchone()
            usage = db.usage(user)
            with db.admin() as conn:
                ledger = conn.execute(
                    "select idempotency_key = %s, credit_type, status from public.credit_charges where user_id = %s",
                    (key, user),
                ).fetchall()
            balance = {
                k: usage[k]
                for k in (
                    "free_expansions_remaining",
                    "paid_credits_remaining",
                    "total_expansions_used",
                    "total_paid_used",
                    "total_free_used",
                )
            }
            effects.append((answer, balance, ledger))
        assert effects[0] == effects[1]
        assert effects[0] == (
            ("paid",),
            {
                "free_expansions_remaining": 0,
                "paid_credits_remaining": 2,
                "total_expansions_used": 1,
                "total_paid_used": 1,
                "total_free_used": 0,
            },
            [(True, "paid", "captured")],
        )
    finally:
        db.close()
