"""benchmarks/charge.py's `unguarded_key` line measures consume_expansion_credit less its replay guard. It
makes that function from the real one as the database holds it, so the line measures whatever the
migrations made of it: checked here, with the charge it makes for a fresh key and its failure on a repeat."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from benchmarks import charge as bench

from ._db import Db

REAL = "'public.consume_expansion_credit(uuid, uuid)'::regprocedure"
FRAME = "pg_get_function_arguments(oid), pg_get_function_result(oid), prolang, provolatile, prosecdef, proconfig"


def test_the_unguarded_charge_is_the_real_function_less_its_replay_guard(own_database: str) -> None:
    db = Db(own_database)
    try:
        with db.admin() as conn:
            definition, source = conn.execute(
                f"select pg_get_functiondef(oid), prosrc from pg_proc where oid = {REAL}"
            ).fetchone() or ("", "")
            ddl = bench.unguarded_charge(definition, source)
            assert ddl is not None
            conn.execute(ddl)
            unguarded = f"'{bench.UNGUARDED_NAME}(uuid, uuid)'::regprocedure"
            (copy,) = conn.execute(f"select prosrc from pg_proc where oid = {unguarded}").fetchone() or ("",)
            frames = conn.execute(f"select {FRAME} from pg_proc where oid in ({REAL}, {unguarded})").fetchall()
        # The same source but for the handler, which no longer opens a subtransaction; the same frame.
        handler_start = source.index(bench.HANDLER)
        handler_end = source.index("\n  end;\n", handler_start)
        assert copy == source[:handler_start] + source[handler_end:]
        assert "exception" not in copy.lower().replace("raise exception", "")
        assert len(frames) == 2
        assert frames[0] == frames[1]
        assert frames[0][5] == ['search_path=""']
        # No handler (the function before the charge_in_one_frame migration): no line, not a wrong one.
        assert bench.unguarded_charge(definition, "begin perform 1; end") is None
        # Anything but the real function's own definition is refused.
        with pytest.raises(RuntimeError, match="unexpected definition"):
            bench.unguarded_charge(definition.replace("public.consume_expansion_credit", "public.other"), source)

        # A fresh key charges alike: the same answer, the same balance change, the same ledger row.
        effects = []
        for function in ("public.consume_expansion_credit", bench.UNGUARDED_NAME):
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
            columns = ("free_expansions_remaining", "paid_credits_remaining", "total_expansions_used")
            balance = {name: usage[name] for name in (*columns, "total_paid_used", "total_free_used")}
            effects.append((answer, balance, ledger))
            # A repeated key: the real function answers it; without the guard it fails, charging nothing.
            with db.admin() as conn:
                if function == bench.UNGUARDED_NAME:
                    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
                        conn.execute(f"select {function}(%s, %s)", (user, key))
                else:
                    assert conn.execute(f"select {function}(%s, %s)", (user, key)).fetchone() == ("paid",)
            assert db.usage(user)["paid_credits_remaining"] == 2
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
