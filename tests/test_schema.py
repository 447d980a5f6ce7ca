"""The schema matches the guide, and its security posture is what the migrations promise."""

from __future__ import annotations

import re

import pytest

from ._db import Db

# table -> {column: (data_type, nullable)} for every column the guide lists (plus our additions).
GUIDE_COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "users": {
        "id": ("uuid", "NO"),
        "email": ("text", "NO"),
        "name": ("text", "YES"),
        "timezone": ("text", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
    },
    "ideas": {
        "id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "title": ("text", "NO"),
        "description": ("text", "YES"),
        "bullets": ("jsonb", "NO"),
        "external_links": ("jsonb", "NO"),
        "status": ("text", "NO"),
        "priority_score": ("integer", "NO"),
        "last_evaluated_at": ("timestamp with time zone", "YES"),
        "times_evaluated": ("integer", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
    },
    "credentials": {
        "id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "provider": ("text", "NO"),
        "encrypted_value": ("text", "NO"),
        "is_active": ("boolean", "NO"),
        "validation_status": ("text", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
    },
    "executions": {
        "id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "selected_idea_id": ("uuid", "YES"),
        "judge_reasoning": ("text", "YES"),
        "judge_score": ("integer", "YES"),
        "format_chosen": ("text", "YES"),
        "format_reasoning": ("text", "YES"),
        "status": ("text", "NO"),
        "error_message": ("text", "YES"),
        "error_step": ("text", "YES"),
        "tokens_used": ("integer", "NO"),
        "duration_seconds": ("integer", "YES"),
        "started_at": ("timestamp with time zone", "NO"),
        "completed_at": ("timestamp with time zone", "YES"),
        "idempotency_key": ("uuid", "YES"),
        "requested_format": ("text", "YES"),
        "current_stage": ("text", "YES"),
        "worker_id": ("text", "YES"),
        "heartbeat_at": ("timestamp with time zone", "YES"),
        "make_public": ("boolean", "NO"),
        # model_usage migration: the run record
        "input_tokens": ("integer", "NO"),
        "output_tokens": ("integer", "NO"),
        "cost_usd": ("numeric", "YES"),
        "model_calls": ("jsonb", "NO"),
        "generation": ("text", "YES"),
        "review_score": ("integer", "YES"),
        "charged": ("boolean", "NO"),
    },
    "outputs": {
        "id": ("uuid", "NO"),
        "execution_id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "idea_id": ("uuid", "YES"),
        "format": ("text", "NO"),
        "content": ("jsonb", "NO"),
        "published": ("boolean", "NO"),
        "publication_url": ("text", "YES"),
        "publication_metadata": ("jsonb", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "published_at": ("timestamp with time zone", "YES"),
    },
    "blog_posts": {
        "id": ("uuid", "NO"),
        "output_id": ("uuid", "YES"),
        "user_id": ("uuid", "NO"),
        "title": ("text", "NO"),
        "slug": ("text", "NO"),
        "markdown_content": ("text", "NO"),
        "html_content": ("text", "NO"),
        "meta_description": ("text", "YES"),
        "tags": ("ARRAY", "NO"),
        "is_public": ("boolean", "NO"),
        "published_at": ("timestamp with time zone", "YES"),
        "created_at": ("timestamp with time zone", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
    },
    "usage_tracking": {
        "id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "free_expansions_remaining": ("integer", "NO"),
        "paid_credits_remaining": ("integer", "NO"),
        "total_expansions_used": ("integer", "NO"),
        "total_free_used": ("integer", "NO"),
        "total_paid_used": ("integer", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
    },
    "payment_receipts": {
        "id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "amount_usd": ("numeric", "NO"),
        "credits_purchased": ("integer", "NO"),
        "bmc_reference": ("text", "YES"),
        "notes": ("text", "YES"),
        "verified_by": ("text", "YES"),
        "status": ("text", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "verified_at": ("timestamp with time zone", "YES"),
    },
    "credit_charges": {
        "id": ("uuid", "NO"),
        "user_id": ("uuid", "NO"),
        "idempotency_key": ("uuid", "YES"),
        "credit_type": ("text", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
        "status": ("text", "NO"),
    },
}

DEFAULTS = {
    ("ideas", "status"): "'pending'::text",
    ("ideas", "priority_score"): "0",
    ("ideas", "bullets"): "'[]'::jsonb",
    ("ideas", "external_links"): "'[]'::jsonb",
    ("users", "timezone"): "'UTC'::text",
    ("credentials", "is_active"): "true",
    ("credentials", "validation_status"): "'not_checked'::text",
    ("executions", "status"): "'running'::text",
    ("executions", "tokens_used"): "0",
    ("executions", "input_tokens"): "0",
    ("executions", "output_tokens"): "0",
    ("executions", "model_calls"): "'[]'::jsonb",
    ("executions", "charged"): "false",
    ("outputs", "published"): "false",
    ("outputs", "publication_metadata"): "'{}'::jsonb",
    ("blog_posts", "is_public"): "true",
    ("usage_tracking", "free_expansions_remaining"): "5",
    ("usage_tracking", "paid_credits_remaining"): "0",
    ("payment_receipts", "status"): "'verified'::text",
}

GUIDE_INDEXES = {
    "idx_ideas_user_status",
    "idx_ideas_created",
    "idx_ideas_priority",
    "idx_executions_user_started",
    "idx_executions_status",
    "idx_outputs_user_created",
    "idx_outputs_execution",
    "idx_outputs_format",
    "users_email_key",
    "credentials_user_id_provider_key",
    "blog_posts_user_id_slug_key",
    "blog_posts_output_id_key",
    "usage_tracking_user_id_key",
    "payment_receipts_bmc_reference_key",
}


def test_columns_types_and_nullability_match_the_guide(db: Db) -> None:
    with db.admin() as conn:
        rows = conn.execute(
            "select table_name, column_name, data_type, is_nullable from information_schema.columns "
            "where table_schema = 'public'"
        ).fetchall()
    actual: dict[str, dict[str, tuple[str, str]]] = {}
    for table, column, data_type, nullable in rows:
        actual.setdefault(table, {})[column] = (data_type, nullable)
    assert actual == GUIDE_COLUMNS


def test_every_uuid_key_defaults_to_gen_random_uuid(db: Db) -> None:
    with db.admin() as conn:
        defaults = dict(
            conn.execute(
                "select table_name, column_default from information_schema.columns "
                "where table_schema = 'public' and column_name = 'id'"
            ).fetchall()
        )
    # The ledger's ids are time-ordered (charge_at_limit migration): it is appended to on every charge.
    assert defaults == dict.fromkeys(GUIDE_COLUMNS, "gen_random_uuid()") | {"credit_charges": "private.uuidv7()"}


@pytest.mark.parametrize(("table", "column"), sorted(DEFAULTS))
def test_defaults(db: Db, table: str, column: str) -> None:
    assert (
        db.scalar(
            "select column_default from information_schema.columns "
            "where table_schema = 'public' and table_name = %s and column_name = %s",
            (table, column),
        )
        == DEFAULTS[(table, column)]
    )


def test_indexes_of_the_guide_exist(db: Db) -> None:
    with db.admin() as conn:
        names = {r[0] for r in conn.execute("select indexname from pg_indexes where schemaname = 'public'")}
    assert names >= GUIDE_INDEXES


def test_every_foreign_key_has_a_covering_index(db: Db) -> None:
    with db.admin() as conn:
        uncovered = conn.execute(
            """
            select c.conname from pg_constraint c
             where c.contype = 'f' and c.connamespace = 'public'::regnamespace
               and not exists (
                 select 1 from pg_index i
                  where i.indrelid = c.conrelid
                    and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
                    and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
            """
        ).fetchall()
    assert uncovered == []


def test_rls_is_enabled_on_every_public_table(db: Db) -> None:
    with db.admin() as conn:
        rows = conn.execute(
            "select c.relname, c.relrowsecurity from pg_class c "
            "where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'"
        ).fetchall()
    assert len(rows) == len(GUIDE_COLUMNS)
    assert all(enabled for _, enabled in rows), rows


def test_policies_are_per_role_per_action_with_wrapped_auth_calls(db: Db) -> None:
    with db.admin() as conn:
        policies = conn.execute(
            "select schemaname, tablename, policyname, roles::text[], cmd, permissive, coalesce(qual, ''), "
            "coalesce(with_check, '') from pg_policies where schemaname in ('public', 'storage')"
        ).fetchall()
    assert len(policies) == 23
    seen: set[tuple[str, str, str, str]] = set()
    for schema, table, name, roles, cmd, permissive, qual, check in policies:
        assert permissive == "PERMISSIVE", name
        assert cmd != "ALL", f"{name}: one policy per action"
        assert roles in (["authenticated"], ["anon"]), f"{name}: {roles}"
        for expr in (qual, check):
            # auth.uid() only ever inside a scalar sub-select, so it is evaluated once per statement
            assert not re.search(r"(?<!SELECT )(?<!SELECT \()auth\.uid\(\)", expr), f"{name}: {expr}"
        key = (schema, table, roles[0], cmd)
        assert key not in seen, f"two permissive policies for {key}"
        seen.add(key)


EXPECTED_EXECUTE = {
    # function: roles that may execute it
    "check_user_has_credits(uuid)": {"authenticated", "service_role"},
    "consume_expansion_credit(uuid,uuid)": {"service_role"},
    "add_paid_credits(uuid,integer,numeric,text,text,text)": {"service_role"},
    "set_updated_at()": set(),
    "enforce_idea_status_transition()": set(),
    "create_usage_for_new_user()": set(),
    "handle_auth_user_change()": set(),
    "enforce_execution_transition()": set(),
    "enforce_credential_validation_status()": set(),
    "start_expansion(uuid,uuid,text,uuid,boolean,boolean)": {"service_role"},
    "claim_next_expansion(text)": {"service_role"},
    "record_expansion_stage(uuid,text)": {"service_role"},
    "record_expansion_evaluation(uuid,integer,text)": {"service_role"},
    "finish_expansion(uuid,text,integer,integer,text,text,text,jsonb,text,text,jsonb,numeric,integer)": {
        "service_role"
    },
    "record_expansion_delivery(uuid,text,text,text,jsonb)": {"service_role"},
    "reap_stale_expansions(interval)": {"service_role"},
    "expansion_status(uuid)": {"authenticated", "service_role"},
    # private: helpers the API cannot reach; only the functions above (run as service_role) call them
    "private.lock_usage(uuid)": {"service_role"},
    "private.take_credit(uuid,uuid,boolean)": {"service_role"},
    "private.settle_credit(uuid,uuid,boolean)": {"service_role"},
    "private.lock_execution(uuid)": {"service_role"},
    "private.running_execution(uuid,text)": {"service_role"},
    "private.guard_idea_in_flight()": set(),
    "private.relink_profile(uuid,uuid)": set(),  # only the auth.users trigger links a profile
    # money records and input limits: the helpers below run as the writer (CHECKs, a storage policy, triggers)
    "private.email_digest(text)": {"service_role"},
    "private.keep_financial_rows()": set(),
    "private.jsonb_strings_within(jsonb,integer)": {"authenticated", "service_role"},
    "private.model_calls_valid(jsonb)": {"authenticated", "service_role"},
    "private.texts_within(text[],integer)": {"authenticated", "service_role"},
    "private.image_slot_free(text)": {"authenticated"},
    "private.uuidv7()": {"service_role"},  # the ledger id default, evaluated by whoever inserts a charge
    "private.stamp_published_at()": set(),  # a trigger: a post made public gets its publication time
    "private.refuse_public_uncharged_post()": set(),  # a trigger: a post of a run never charged stays private
    "refund_payment(uuid,text)": {"service_role"},
    "report_user_summary(integer,timestamp with time zone,text)": {"service_role"},
    "report_top_users(integer)": {"service_role"},
    "report_failed_expansions(integer,bigint,text,text)": {"service_role"},
    "report_payments(integer,timestamp with time zone,uuid)": {"service_role"},
    "report_payment_summary(integer,numeric,text)": {"service_role"},
    "report_recent_executions(integer)": {"service_role"},
    "report_execution_summary(integer,bigint,text)": {"service_role"},
}


def test_function_grants_search_path_and_security(db: Db) -> None:
    with db.admin() as conn:
        functions = conn.execute(
            """
            select case when p.pronamespace = 'private'::regnamespace then 'private.' else '' end
                   || p.proname || '(' || coalesce(
                     (select string_agg(format_type(t, null), ',' order by ord)
                        from unnest(p.proargtypes) with ordinality as a(t, ord)), '') || ')',
                   p.oid, p.prosecdef, coalesce(p.proconfig, '{}')
              from pg_proc p where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
            """
        ).fetchall()
        results = {}
        for signature, oid, secdef, config in functions:
            grantees = {
                role
                for role in ("public", "anon", "authenticated", "service_role")
                if conn.execute(
                    "select bool_or(a.privilege_type = 'EXECUTE') from pg_proc p, aclexplode(p.proacl) a "
                    "where p.oid = %s and a.grantee = (case when %s = 'public' then 0 else %s::regrole::oid end)",
                    (oid, role, role if role != "public" else "anon"),
                ).fetchone()
                == (True,)
            }
            results[signature] = (grantees, secdef, config)
    assert {name: grantees for name, (grantees, _, _) in results.items()} == EXPECTED_EXECUTE
    assert all(config == ['search_path=""'] for _, _, config in results.values()), results
    assert sorted(name for name, (_, secdef, _) in results.items() if secdef) == [
        "handle_auth_user_change()",
        "private.guard_idea_in_flight()",  # users delete their ideas; the trigger cancels runs they cannot write
    ]


def test_anon_has_no_table_privileges_except_reading_blog_posts(db: Db) -> None:
    with db.admin() as conn:
        grants = conn.execute(
            "select table_name, privilege_type from information_schema.role_table_grants "
            "where table_schema = 'public' and grantee in ('anon', 'PUBLIC')"
        ).fetchall()
    assert grants == [("blog_posts", "SELECT")]


@pytest.mark.parametrize("table", ["executions", "outputs", "usage_tracking", "payment_receipts", "credit_charges"])
def test_authenticated_has_no_write_path_on_service_tables(db: Db, table: str) -> None:
    with db.admin() as conn:
        privileges = {
            r[0]
            for r in conn.execute(
                "select privilege_type from information_schema.role_table_grants "
                "where table_schema = 'public' and grantee = 'authenticated' and table_name = %s",
                (table,),
            )
        }
        column_privileges = {
            r[0]
            for r in conn.execute(
                "select privilege_type from information_schema.column_privileges "
                "where table_schema = 'public' and grantee = 'authenticated' and table_name = %s",
                (table,),
            )
        }
    assert privileges == {"SELECT"}
    assert column_privileges <= {"SELECT"}
