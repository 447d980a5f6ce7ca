"""benchmarks/charge.py's `unguarded_key` line measures consume_expansion_credit's keyed charge less its
replay guard. It takes the keyed statement from the function as the database holds it, so the line
measures whatever the migrations made of it: checked here, with the charge it makes for a fresh key."""

from __future__ import annotations

import uuid

import pytest
from benchmarks import charge as bench

from ._db import Db


def test_the_unguarded_charge_runs_the_real_keyed_statement(own_database: str) -> None:
    db = Db(own_database)
    try:
        with db.admin() as conn:
            source, definition = conn.execute(
                """select prosrc, pg_get_functiondef(oid) from pg_proc
                    where oid = 'public.consume_expansion_credit(uuid, uuid)'::regprocedure"""
            ).fetchone() or (None, None)
        keyed = bench.keyed_statement(str(source))
        assert keyed is not None
        assert keyed.startswith("with charged as (")
        assert keyed.endswith("into v_type;")
        assert "p_idempotency_key" in keyed
        assert "--" not in keyed
        # It is the body of the exception block (what the unguarded function lacks), not another statement.
        handler = str(source).index("exception when unique_violation")
        assert str(source).rindex("with charged as (", 0, handler) > str(source).rindex("begin", 0, handler)
        # A version of the function without a keyed statement in its block gives no line, not a wrong one.
        assert bench.keyed_statement("begin perform 1; exception when unique_violation then null; end") is None
        assert bench.keyed_statement("begin perform 1; end") is None

        # The same frame: the real function's arguments, language, volatility, security and search_path.
        with db.admin() as conn:
            conn.execute(bench.unguarded_charge(str(definition), keyed))
            frames = conn.execute(
                """select proname, pg_get_function_arguments(oid), prolang, provolatile, prosecdef, proconfig
                     from pg_proc where oid in ('public.consume_expansion_credit(uuid, uuid)'::regprocedure,
                                                %s::regprocedure)""",
                (f"{bench.UNGUARDED_NAME}(uuid, uuid)",),
            ).fetchall()
        assert sorted(frame[0] for frame in frames) == ["charge_without_replay_guard", "consume_expansion_credit"]
        assert frames[0][1:] == frames[1][1:]
        assert frames[0][5] == ['search_path=""']
        # Anything but the real function's own definition is refused, so that it is never replaced by mistake.
        with pytest.raises(RuntimeError, match="unexpected definition"):
            bench.unguarded_charge(str(definition).replace("public.consume_expansion_credit", "public.other"), keyed)
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
            columns = ("free_expansions_remaining", "paid_credits_remaining", "total_expansions_used")
            balance = {name: usage[name] for name in (*columns, "total_paid_used", "total_free_used")}
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
