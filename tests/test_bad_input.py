"""Bad input is rejected by the database with a clear error, and nothing is written.

Every CHECK constraint in public has a case here (a test compares the list with pg_constraint), and so
do the idea status transitions, NOT NULL, foreign keys, unique keys and malformed values.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from ._db import Db

LONG = "x" * 10001

# constraint name -> (table, statement run as service_role; placeholders from the `rows` fixture)
CHECK_CASES: dict[str, tuple[str, str]] = {
    "users_email_format": ("users", "insert into public.users (email) values ('not-an-email')"),
    "users_email_ascii": ("users", "insert into public.users (email) values ('k\u00e5te@example.test')"),
    "users_name_length": ("users", "update public.users set name = repeat('n', 201) where id = %(user)s"),
    "users_timezone_length": ("users", "update public.users set timezone = '' where id = %(user)s"),
    "ideas_status_check": (
        "ideas",
        "insert into public.ideas (user_id, title, status) values (%(user)s, 't', 'done')",
    ),
    "ideas_priority_score_check": (
        "ideas",
        "update public.ideas set priority_score = 101 where id = %(idea)s",
    ),
    "ideas_title_length": ("ideas", "insert into public.ideas (user_id, title) values (%(user)s, '   ')"),
    "ideas_description_length": (
        "ideas",
        "update public.ideas set description = repeat('d', 10001) where id = %(idea)s",
    ),
    "ideas_bullets_check": (
        "ideas",
        'update public.ideas set bullets = \'{"not": "a list"}\' where id = %(idea)s',
    ),
    "ideas_external_links_check": (
        "ideas",
        "update public.ideas set external_links = (select jsonb_agg(i) from generate_series(1, 21) i) "
        "where id = %(idea)s",
    ),
    "ideas_bullets_items_check": (  # each bullet a non-blank string of at most 1000 characters
        "ideas",
        "update public.ideas set bullets = '[1]' where id = %(idea)s",
    ),
    "ideas_external_links_items_check": (
        "ideas",
        "update public.ideas set external_links = jsonb_build_array(repeat('l', 2001)) where id = %(idea)s",
    ),
    "ideas_times_evaluated_check": (
        "ideas",
        "update public.ideas set times_evaluated = -1 where id = %(idea)s",
    ),
    "credentials_provider_check": (
        "credentials",
        "insert into public.credentials (user_id, provider, encrypted_value) values (%(user)s, 'gitlab', 'c')",
    ),
    "credentials_encrypted_value_length": (
        "credentials",
        "insert into public.credentials (user_id, provider, encrypted_value) values (%(user)s, 'openai', '')",
    ),
    "credentials_validation_status_check": (
        "credentials",
        "insert into public.credentials (user_id, provider, encrypted_value, validation_status) "
        "values (%(user)s, 'openai', 'c', 'maybe')",
    ),
    "executions_judge_score_check": (
        "executions",
        "update public.executions set judge_score = -1 where id = %(execution)s",
    ),
    "executions_format_chosen_check": (
        "executions",
        "update public.executions set format_chosen = 'video' where id = %(execution)s",
    ),
    "executions_status_check": (
        "executions",
        "insert into public.executions (user_id, status, completed_at) values (%(user)s, 'done', now())",
    ),
    "executions_tokens_used_check": (
        "executions",
        "update public.executions set tokens_used = -5 where id = %(execution)s",
    ),
    "executions_duration_seconds_check": (
        "executions",
        "update public.executions set duration_seconds = -1 where id = %(execution)s",
    ),
    "executions_error_step_length": (
        "executions",
        "update public.executions set error_step = repeat('s', 65) where id = %(execution)s",
    ),
    "executions_completed_at_check": (  # a running run with a finish time (status changes are the trigger's)
        "executions",
        "update public.executions set completed_at = now() where id = %(execution)s",
    ),
    "executions_completed_after_start": (
        "executions",
        "update public.executions set status = 'failed', completed_at = started_at - interval '1 second' "
        "where id = %(execution)s",
    ),
    # model_usage: the run record
    "executions_input_tokens_check": (
        "executions",
        "update public.executions set input_tokens = -1 where id = %(execution)s",
    ),
    "executions_output_tokens_check": (
        "executions",
        "update public.executions set output_tokens = -1 where id = %(execution)s",
    ),
    "executions_cost_usd_check": (
        "executions",
        "update public.executions set cost_usd = -0.01 where id = %(execution)s",
    ),
    "executions_model_calls_check": (
        "executions",
        "update public.executions set model_calls = jsonb_build_array(jsonb_build_object('stage', 'judge')) "
        "where id = %(execution)s",
    ),
    "executions_generation_check": (
        "executions",
        "update public.executions set generation = 'magic' where id = %(execution)s",
    ),
    "executions_generation_once_finished": (  # a running run is not generated yet
        "executions",
        "update public.executions set generation = 'model' where id = %(execution)s",
    ),
    "executions_review_score_check": (
        "executions",
        "update public.executions set review_score = 101 where id = %(execution)s",
    ),
    "executions_charged_when_delivered": (
        "executions",
        "update public.executions set charged = true where id = %(execution)s",
    ),
    "executions_judge_reasoning_length": (
        "executions",
        "update public.executions set judge_reasoning = repeat('r', 2001) where id = %(execution)s",
    ),
    "executions_format_reasoning_length": (
        "executions",
        "update public.executions set format_reasoning = repeat('r', 2001) where id = %(execution)s",
    ),
    "executions_fallback_never_charged": (
        "executions",
        "insert into public.executions (user_id, status, completed_at, generation, charged) "
        "values (%(user)s, 'partial', now(), 'fallback', true)",
    ),
    "executions_requested_format_check": (
        "executions",
        "update public.executions set requested_format = 'video' where id = %(execution)s",
    ),
    "executions_current_stage_check": (
        "executions",
        "update public.executions set current_stage = 'dreaming' where id = %(execution)s",
    ),
    "executions_worker_id_length": (
        "executions",
        "update public.executions set worker_id = repeat('w', 201) where id = %(execution)s",
    ),
    "credit_charges_status_check": (
        "credit_charges",
        "insert into public.credit_charges (user_id, credit_type, status) values (%(user)s, 'free', 'lost')",
    ),
    "outputs_format_check": ("outputs", "update public.outputs set format = 'video' where id = %(output)s"),
    "outputs_content_check": ("outputs", "update public.outputs set content = '[]' where id = %(output)s"),
    "outputs_publication_metadata_check": (
        "outputs",
        "update public.outputs set publication_metadata = '\"x\"' where id = %(output)s",
    ),
    "outputs_published_check": (
        "outputs",
        "update public.outputs set published = true where id = %(output)s",
    ),
    "blog_posts_title_length": ("blog_posts", "update public.blog_posts set title = '' where id = %(post)s"),
    "blog_posts_slug_format": (
        "blog_posts",
        "update public.blog_posts set slug = 'Not A Slug' where id = %(post)s",
    ),
    "blog_posts_meta_description_length": (
        "blog_posts",
        "update public.blog_posts set meta_description = repeat('m', 161) where id = %(post)s",
    ),
    "blog_posts_tags_check": (
        "blog_posts",
        "update public.blog_posts set tags = array(select 't' || i from generate_series(1, 21) i) where id = %(post)s",
    ),
    "blog_posts_tags_items_check": (
        "blog_posts",
        "update public.blog_posts set tags = array[repeat('t', 51)] where id = %(post)s",
    ),
    # a public post always has a publication time (the public listing pages by it)
    "blog_posts_public_has_published_at": (
        "blog_posts",
        "update public.blog_posts set published_at = null where id = %(post)s",
    ),
    "usage_tracking_balance_max": (
        "usage_tracking",
        "update public.usage_tracking set paid_credits_remaining = 1000001 where user_id = %(user)s",
    ),
    "usage_tracking_free_check": (
        "usage_tracking",
        "update public.usage_tracking set free_expansions_remaining = -1 where user_id = %(user)s",
    ),
    "usage_tracking_paid_check": (
        "usage_tracking",
        "update public.usage_tracking set paid_credits_remaining = -1 where user_id = %(user)s",
    ),
    "usage_tracking_totals_check": (
        "usage_tracking",
        "update public.usage_tracking set total_expansions_used = 7 where user_id = %(user)s",
    ),
    "payment_receipts_amount_usd_check": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased) values (%(user)s, 0, 1)",
    ),
    "payment_receipts_credits_purchased_check": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased) values (%(user)s, 1, 0)",
    ),
    "payment_receipts_bmc_reference_format": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased, bmc_reference) "
        "values (%(user)s, 1, 1, ' BMC-1 ')",
    ),
    "payment_receipts_credits_purchased_max": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased) values (%(user)s, 1, 100001)",
    ),
    "payment_receipts_notes_length": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased, notes) "
        "values (%(user)s, 1, 1, repeat('n', 2001))",
    ),
    "payment_receipts_verified_by_length": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased, verified_by) "
        "values (%(user)s, 1, 1, repeat('v', 201))",
    ),
    "payment_receipts_status_check": (
        "payment_receipts",
        "insert into public.payment_receipts (user_id, amount_usd, credits_purchased, status) "
        "values (%(user)s, 1, 1, 'lost')",
    ),
    "credit_charges_credit_type_check": (
        "credit_charges",
        "insert into public.credit_charges (user_id, credit_type) values (%(user)s, 'bonus')",
    ),
}


@pytest.fixture(scope="module")
def rows(db: Db) -> dict[str, Any]:
    user = db.create_user()
    with db.as_service() as conn:
        idea = conn.execute(
            "insert into public.ideas (user_id, title) values (%s, 'i') returning id", (user,)
        ).fetchone()
        assert idea is not None
        execution = conn.execute("insert into public.executions (user_id) values (%s) returning id", (user,)).fetchone()
        # The post's run is a delivered, charged one: only a charged run's post may be public (uncharged_posts_private).
        delivered = conn.execute(
            "insert into public.executions (user_id, status, current_stage, charged, generation, completed_at) "
            "values (%s, 'completed', 'done', true, 'offline', now()) returning id",
            (user,),
        ).fetchone()
        assert delivered is not None
        assert execution is not None
        output = conn.execute(
            "insert into public.outputs (execution_id, user_id, format, content) "
            "values (%s, %s, 'blog_post', '{}') returning id",
            (delivered[0], user),
        ).fetchone()
        assert output is not None
        post = conn.execute(
            "insert into public.blog_posts (output_id, user_id, title, slug, markdown_content, html_content) "
            "values (%s, %s, 't', 'a-post', 'm', 'h') returning id",
            (output[0], user),
        ).fetchone()
        assert post is not None
    return {"user": user, "idea": idea[0], "execution": execution[0], "output": output[0], "post": post[0]}


def fingerprint(db: Db, table: str) -> Any:
    """Every row of a table, hashed: equal before and after means nothing was written."""
    return db.scalar(
        f"select count(*) || ':' || coalesce(md5(string_agg(t::text, ',' order by t::text)), '') from public.{table} t"
    )


def rejected(db: Db, statement: str, params: dict[str, Any]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as exc, db.as_service() as conn:
        conn.execute(statement, params)
    return exc.value


@pytest.mark.parametrize("constraint", sorted(CHECK_CASES))
def test_every_check_constraint_rejects_bad_input(db: Db, rows: dict[str, Any], constraint: str) -> None:
    table, statement = CHECK_CASES[constraint]
    before = fingerprint(db, table)
    error = rejected(db, statement, rows)
    assert error.sqlstate == "23514"
    assert error.diag.constraint_name == constraint
    assert fingerprint(db, table) == before


def test_every_check_constraint_has_a_case(db: Db) -> None:
    with db.admin() as conn:
        names = {
            r[0]
            for r in conn.execute(
                "select conname from pg_constraint where contype = 'c' and connamespace = 'public'::regnamespace"
            )
        }
    assert names == set(CHECK_CASES)


ALLOWED = {("pending", "expanded"), ("pending", "archived"), ("expanded", "archived")}
STATUSES = ("pending", "expanded", "archived")


@pytest.mark.parametrize(("old", "new"), [(a, b) for a in STATUSES for b in STATUSES])
@pytest.mark.parametrize("role", ["service_role", "authenticated"])
def test_idea_status_transitions(db: Db, rows: dict[str, Any], old: str, new: str, role: str) -> None:
    user = rows["user"]
    with db.admin() as conn:
        row = conn.execute(
            "insert into public.ideas (user_id, title, status) values (%s, 'transition', %s) returning id",
            (user, old),
        ).fetchone()
        assert row is not None
    idea = row[0]
    allowed = old == new or (old, new) in ALLOWED
    statement = "update public.ideas set status = %s where id = %s returning status"
    if allowed and new == "expanded" and old == "pending" and role == "authenticated":
        # A legal transition, but only an expansion run (the service role) makes it.
        with pytest.raises(psycopg.Error) as refused, db.request(role, user) as conn:
            conn.execute(statement, (new, idea))
        assert refused.value.sqlstate == "42501"
        assert db.scalar("select status from public.ideas where id = %s", (idea,)) == old
    elif allowed:
        with db.request(role, user if role == "authenticated" else None) as conn:
            assert conn.execute(statement, (new, idea)).fetchone() == (new,)
    else:
        with (
            pytest.raises(psycopg.Error) as refused,
            db.request(role, user if role == "authenticated" else None) as conn,
        ):
            conn.execute(statement, (new, idea))
        assert refused.value.sqlstate == "23514"
        assert refused.value.diag.message_primary == f"invalid idea status transition: {old} -> {new}"
        assert "pending -> expanded" in (refused.value.diag.message_hint or "")
        assert db.scalar("select status from public.ideas where id = %s", (idea,)) == old


def test_a_batch_with_one_bad_row_writes_nothing(db: Db, rows: dict[str, Any]) -> None:
    before = fingerprint(db, "ideas")
    error = rejected(
        db,
        "insert into public.ideas (user_id, title) values (%(user)s, 'good one'), (%(user)s, repeat('t', 201))",
        rows,
    )
    assert error.diag.constraint_name == "ideas_title_length"
    assert fingerprint(db, "ideas") == before


@pytest.mark.parametrize(
    ("statement", "sqlstate"),
    [
        ("insert into public.ideas (user_id) values (%(user)s)", "23502"),
        ("insert into public.ideas (user_id, title) values (gen_random_uuid(), 't')", "23503"),
        ("insert into public.ideas (user_id, title) values ('not-a-uuid', 't')", "22P02"),
        (
            "insert into public.users (email) values ((select email from public.users where id = %(user)s))",
            "23505",
        ),
        (
            "insert into public.credentials (user_id, provider, encrypted_value) values (%(user)s, 'github', 'a'), "
            "(%(user)s, 'github', 'b')",
            "23505",
        ),
        (
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content) "
            "values (%(user)s, 't', 'a-post', 'm', 'h')",
            "23505",
        ),
        (
            "insert into public.outputs (execution_id, user_id, format, content) "
            "values (gen_random_uuid(), %(user)s, 'image', '{}')",
            "23503",
        ),
        ("insert into public.ideas (user_id, title, bullets) values (%(user)s, 't', 'not json')", "22P02"),
    ],
    ids=[
        "missing-title",
        "unknown-user",
        "malformed-uuid",
        "duplicate-email",
        "duplicate-provider",
        "duplicate-slug",
        "unknown-execution",
        "malformed-json",
    ],
)
def test_structural_errors(db: Db, rows: dict[str, Any], statement: str, sqlstate: str) -> None:
    assert rejected(db, statement, rows).sqlstate == sqlstate


def test_output_cannot_reference_another_users_execution_or_idea(db: Db, rows: dict[str, Any]) -> None:
    stranger = db.create_user()
    for column, value in (("execution_id", rows["execution"]), ("idea_id", rows["idea"])):
        extra = "" if column == "execution_id" else ", execution_id"
        values = "%(value)s" if column == "execution_id" else "%(value)s, %(own_execution)s"
        with db.as_service() as conn:
            own_execution = conn.execute(
                "insert into public.executions (user_id) values (%s) returning id", (stranger,)
            ).fetchone()
        assert own_execution is not None
        error = rejected(
            db,
            f"insert into public.outputs (user_id, format, content, {column}{extra}) "
            f"values (%(stranger)s, 'image', '{{}}', {values})",
            {"stranger": stranger, "value": value, "own_execution": own_execution[0]},
        )
        assert error.sqlstate == "23503", column


def test_deleting_an_idea_keeps_runs_and_outputs(db: Db, rows: dict[str, Any]) -> None:
    user = rows["user"]
    with db.as_service() as conn:
        idea = conn.execute(
            "insert into public.ideas (user_id, title) values (%s, 'gone') returning id", (user,)
        ).fetchone()
        assert idea is not None
        execution = conn.execute(  # a finished run: a running one keeps its idea (see test_run_lifecycle)
            "insert into public.executions (user_id, selected_idea_id, status, completed_at) "
            "values (%s, %s, 'completed', now()) returning id",
            (user, idea[0]),
        ).fetchone()
        assert execution is not None
        output = conn.execute(
            "insert into public.outputs (execution_id, user_id, idea_id, format, content) "
            "values (%s, %s, %s, 'image', '{}') returning id",
            (execution[0], user, idea[0]),
        ).fetchone()
        assert output is not None
        conn.execute("delete from public.ideas where id = %s", (idea[0],))
    assert db.scalar("select selected_idea_id is null from public.executions where id = %s", (execution[0],)) is True
    assert (
        db.scalar("select idea_id is null and user_id = %s from public.outputs where id = %s", (user, output[0]))
        is True
    )


def test_unknown_user_id_in_requests_is_not_found_for_everyone(db: Db) -> None:
    with db.as_user(uuid.uuid4()) as conn:
        assert conn.execute("select count(*) from public.ideas").fetchone() == (0,)
