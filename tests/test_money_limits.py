"""Money records and input limits: payment references, bounded grants and reports, financial rows that
outlive their user, a re-signup's free credits, sizes the database enforces, the images bucket's limits,
the bounded prompt per credit, and idempotency keys scoped per user."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from idea_expansion import ConflictError, IdeaExpansion, InvalidRequestError
from idea_expansion.local.maintenance import backup, reset_data, restore
from idea_expansion.pipeline import OfflineProvider, Pipeline
from idea_expansion.pipeline.budget import call_ceiling, worst_case_tokens_per_credit
from idea_expansion.pipeline.providers import Completion, IdeaBrief, Task
from idea_expansion.pipeline.providers.base import MAX_IDEA_PROMPT_CHARS
from idea_expansion.pipeline.providers.llm import SYSTEM, _user_message
from idea_expansion.types.params import (
    MAX_BALANCE,
    MAX_BULLET_CHARS,
    MAX_BULLETS,
    MAX_DESCRIPTION_CHARS,
    MAX_GRANT,
    MAX_IMAGES_PER_USER,
    MAX_LINK_CHARS,
    MAX_LINKS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TITLE_CHARS,
    IdeaCreate,
    parse_params,
)

from ._clients import client_of_kind, over_both_clients
from ._db import Db, apply_request_context
from .conftest import migrated_database, project_before


@pytest.fixture
def client(request: pytest.FixtureRequest, client: IdeaExpansion) -> IdeaExpansion:
    """The service client: the sync one, or both in turn for the tests marked `@over_both_clients`."""
    chosen: IdeaExpansion = client_of_kind(request, client)
    return chosen


T = TypeVar("T", bound=BaseModel)
README = Path(__file__).resolve().parent.parent / "README.md"


def grant(db: Db, user_id: uuid.UUID, credits: int, amount: str, reference: str | None) -> uuid.UUID:
    with db.as_service() as conn:
        row = conn.execute(
            "select public.add_paid_credits(%s, %s, %s::numeric, %s, 'test-admin', null)",
            (user_id, credits, amount, reference),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


def refused(db: Db, statement: str, params: Any = None, *, role: str = "service_role", user: Any = None) -> Any:
    with pytest.raises(psycopg.Error) as exc, db.request(role, user) as conn:
        conn.execute(statement, params)
    return exc.value


def receipts_of(db: Db, user_id: uuid.UUID) -> int:
    return int(db.scalar("select count(*) from public.payment_receipts where user_id = %s", (user_id,)))


# -- references ------------------------------------------------------------------------------------------
def test_a_reference_is_one_payment_trimmed_and_case_insensitive(db: Db) -> None:
    user, other = db.create_user(), db.create_user()
    tag = uuid.uuid4().hex[:10]
    first = grant(db, user, 5, "5.00", f"bmc-{tag}")
    for variant in (f" BMC-{tag} ", f"Bmc-{tag.upper()}\t", f"bmc-{tag}"):
        assert grant(db, user, 5, "5.00", variant) == first, variant
    assert db.usage(user)["paid_credits_remaining"] == 5
    assert db.scalar("select bmc_reference from public.payment_receipts where id = %s", (first,)) == f"bmc-{tag}"
    # The same payment claimed for someone else, in any case, is a conflict that grants nothing.
    before = db.usage(other)
    error = refused(db, "select public.add_paid_credits(%s, 5, 5.00, %s, 'x', null)", (other, f"  BMC-{tag.upper()}"))
    assert error.sqlstate == "23505"
    assert db.usage(other) == before
    assert (
        db.scalar("select count(*) from public.payment_receipts where lower(bmc_reference) = %s", (f"bmc-{tag}",)) == 1
    )


@over_both_clients
def test_look_alike_references_are_refused_not_granted_again(db: Db, client: IdeaExpansion) -> None:
    """One payment, one reference: Unicode look-alikes of it are refused, never a second grant."""
    user = db.create_user()
    tag = uuid.uuid4().hex[:8].upper()
    first = grant(db, user, 5, "5.00", f"BMC-{tag}")
    look_alikes = {
        "no-break space": f"\u00a0BMC-{tag}",
        "zero-width space": f"BMC-{tag}\u200b",
        "full-width B": f"\uff22MC-{tag}",
        "Cyrillic Ve": f"\u0412MC-{tag}",
        "bidi override": f"\u202eBMC-{tag}",
        "control character": f"BMC-{tag}\x01",
        "a no-break space alone": "\u00a0",
        "an inner space": f"BMC {tag}",
    }
    for what, reference in look_alikes.items():
        error = refused(db, "select public.add_paid_credits(%s, 5, 5.00, %s, 'x', null)", (user, reference))
        assert error.sqlstate == "22023", what
        with pytest.raises(InvalidRequestError, match="reference"):
            client.credits.grant(user, 5, "5.00", reference)
    assert db.usage(user)["paid_credits_remaining"] == 5
    assert receipts_of(db, user) == 1
    assert grant(db, user, 5, "5.00", f" bmc-{tag.lower()}\t\n") == first  # ASCII blanks and case: the same one


@over_both_clients
def test_a_blank_or_missing_reference_is_refused(db: Db, client: IdeaExpansion) -> None:
    user = db.create_user()
    before = db.usage(user)
    for reference in (None, "", "   ", "\t\n"):
        error = refused(db, "select public.add_paid_credits(%s, 5, 5.00, %s, 'x', null)", (user, reference))
        assert error.sqlstate == "22023", reference
        assert "reference" in (error.diag.message_primary or ""), reference
        with pytest.raises(InvalidRequestError, match="reference"):
            client.credits.grant(user, 5, "5.00", reference)
    assert db.usage(user) == before
    assert receipts_of(db, user) == 0


# -- bounded grants and reports -----------------------------------------------------------------------
@over_both_clients
def test_a_grant_is_capped_and_the_balance_stays_within_bounds(db: Db, client: IdeaExpansion) -> None:
    user = db.create_user()
    for credits in (2**31 - 1, MAX_GRANT + 1):
        error = refused(
            db,
            "select public.add_paid_credits(%s, %s, 5.00, %s, 'x', null)",
            (user, credits, f"CAP-{uuid.uuid4().hex}"),
        )
        assert error.sqlstate == "22023", credits
        assert f"{MAX_GRANT}" in (error.diag.message_primary or "")
        with pytest.raises(InvalidRequestError, match=f"{MAX_GRANT}"):
            client.credits.grant(user, credits, "5.00", f"CAP-{uuid.uuid4().hex}")
    assert db.usage(user)["paid_credits_remaining"] == 0
    assert receipts_of(db, user) == 0

    for _ in range(MAX_BALANCE // MAX_GRANT):
        grant(db, user, MAX_GRANT, "999.00", f"CAP-{uuid.uuid4().hex}")
    assert db.usage(user)["paid_credits_remaining"] == MAX_BALANCE
    error = refused(db, "select public.add_paid_credits(%s, 1, 1.00, %s, 'x', null)", (user, f"CAP-{uuid.uuid4().hex}"))
    assert error.sqlstate == "22023"
    assert f"{MAX_BALANCE}" in (error.diag.message_primary or "")
    assert db.usage(user)["paid_credits_remaining"] == MAX_BALANCE
    assert receipts_of(db, user) == MAX_BALANCE // MAX_GRANT


def test_every_report_works_for_everyone_after_a_grant_at_the_cap(own_database: str, own_client: IdeaExpansion) -> None:
    client, db = own_client, Db(own_database)
    try:
        rich = client.users.create(email=f"rich-{uuid.uuid4().hex[:8]}@example.test")
        poor = client.users.create(email=f"poor-{uuid.uuid4().hex[:8]}@example.test")
        error = refused(db, "select public.add_paid_credits(%s, 2147483647, 1.00, 'HUGE', 'x', null)", (rich.id,))
        assert error.sqlstate == "22023"
        client.credits.grant(rich.id, MAX_GRANT, "999.00", "AT-THE-CAP")
        client.credits.consume(poor.id)
        with db.admin() as conn:  # both balances at their bound: the sum no longer fits what one grant may add
            conn.execute(
                "update public.usage_tracking set free_expansions_remaining = %s, paid_credits_remaining = %s "
                "where user_id = %s",
                (MAX_BALANCE, MAX_BALANCE, rich.id),
            )
        users = {row.email: row for row in client.reports.users()}
        assert users[rich.email].total_remaining == 2 * MAX_BALANCE
        assert users[poor.email].total_remaining == 4
        assert client.reports.top_users() == []
        assert list(client.reports.failed()) == []
        assert [p.credits_purchased for p in client.reports.payments()] == [MAX_GRANT]
        assert [(s.email, s.total_credits) for s in client.reports.payment_summary()] == [(rich.email, MAX_GRANT)]
        assert client.reports.executions() == []
        assert list(client.reports.execution_summary()) == []
        # Every count and sum a report returns is a bigint; integers are only a row's own columns.
        narrow = db.scalar(
            "select string_agg(p.proname || '.' || a.name, ' ' order by p.proname, a.name) "
            "from pg_proc p, unnest(p.proallargtypes, p.proargmodes, p.proargnames) as a(type, mode, name) "
            "where p.pronamespace = 'public'::regnamespace and p.proname like 'report\\_%' and a.mode = 't' "
            "and a.type = 'integer'::regtype"
        )
        assert narrow.split() == [
            "report_payments.credits_purchased",
            "report_recent_executions.duration_seconds",
            "report_recent_executions.tokens_used",
            "report_user_summary.free_remaining",
            "report_user_summary.paid_remaining",
        ]
    finally:
        db.close()


# -- financial rows outlive their user ------------------------------------------------------------------
@over_both_clients
def test_deleting_a_user_keeps_their_payments_and_charges_anonymised(client: IdeaExpansion, db: Db) -> None:
    user = client.users.create(email=f"leaver-{uuid.uuid4().hex[:8]}@example.test")
    reference = f"LEAVER-{uuid.uuid4().hex[:8]}"
    receipt = client.credits.grant(user.id, 3, "3.00", reference)
    client.credits.consume(user.id)  # a captured free credit
    idea = client.ideas.create(user_id=user.id, title="in flight when the account goes")
    client.expansions.start(user.id, idea_id=idea.id, format="twitter_thread")  # a held credit

    client.users.delete(user.id)

    row = db.scalar(
        "select (user_id, amount_usd, credits_purchased, bmc_reference, status)::text from public.payment_receipts "
        "where id = %s",
        (receipt.id,),
    )
    assert row is not None, "the receipt went with the user"
    anonymous = db.scalar("select user_id from public.payment_receipts where id = %s", (receipt.id,))
    assert anonymous != user.id
    assert row == f"({anonymous},3.00,3,{reference},verified)"
    assert db.scalar("select count(*) from public.users where id in (%s, %s)", (user.id, anonymous)) == 0
    with db.admin() as conn:
        charges = conn.execute(
            "select credit_type, status from public.credit_charges where user_id = %s", (anonymous,)
        ).fetchall()
    assert charges == [("free", "captured")]  # the held credit was never charged: it goes with the run
    for table in ("payment_receipts", "credit_charges"):
        assert db.scalar(f"select count(*) from public.{table} where user_id = %s", (user.id,)) == 0
    # The operator's books still have it, and can still refund it.
    payments = [p for p in client.reports.payments() if p.receipt_id == receipt.id]
    assert [(p.email, p.credits_purchased) for p in payments] == [(f"(deleted user {anonymous})", 3)]
    assert any(s.email == f"(deleted user {anonymous})" for s in client.reports.payment_summary())
    with pytest.raises(ConflictError):  # the same payment cannot be granted again to someone else
        client.credits.grant(
            client.users.create(email=f"x-{uuid.uuid4().hex[:8]}@example.test").id, 3, "3.00", reference
        )
    refund = client.credits.refund(receipt.id)
    assert (refund.user_id, refund.credits_removed) == (anonymous, 0)


@over_both_clients
def test_signing_up_again_gets_back_only_the_free_credits_left(client: IdeaExpansion, db: Db) -> None:
    email = f"again-{uuid.uuid4().hex[:8]}@example.test"
    user = client.users.create(email=email)
    for _ in range(3):
        client.credits.consume(user.id)
    client.users.delete(user.id)
    again = client.users.create(email=email.upper())
    assert client.credits.balance(again.id).free_expansions_remaining == 2
    client.credits.consume(again.id)
    client.credits.consume(again.id)
    client.users.delete(again.id)
    third = client.users.create(email=email)
    assert client.credits.balance(third.id).free_expansions_remaining == 0
    # Nothing about the address is kept but a digest.
    assert db.scalar("select count(*) from private.deleted_accounts where email_sha256 like %s", (f"%{email}%",)) == 0
    # A new address, and one deleted unused, still start with 5.
    fresh = client.users.create(email=f"fresh-{uuid.uuid4().hex[:8]}@example.test")
    assert client.credits.balance(fresh.id).free_expansions_remaining == 5
    unused = f"unused-{uuid.uuid4().hex[:8]}@example.test"
    client.users.delete(client.users.create(email=unused).id)
    assert client.credits.balance(client.users.create(email=unused).id).free_expansions_remaining == 5


@over_both_clients
def test_signing_up_again_through_supabase_auth_gets_no_new_free_credits(client: IdeaExpansion, db: Db) -> None:
    email = f"auth-{uuid.uuid4().hex[:8]}@example.test"
    first, second = uuid.uuid4(), uuid.uuid4()
    sign_up = (  # what Supabase Auth does for a confirmed GitHub sign-in
        "insert into auth.users (id, aud, role, email, email_confirmed_at, created_at, updated_at) "
        "values (%s, 'authenticated', 'authenticated', %s, now(), now(), now())"
    )
    with db.request("supabase_auth_admin") as conn:
        conn.execute(sign_up, (first, email))
    client.credits.consume(first)
    with db.request("supabase_auth_admin") as conn:
        conn.execute("delete from auth.users where id = %s", (first,))
        conn.execute(sign_up, (second, email.title()))
    assert client.credits.balance(second).free_expansions_remaining == 4


def test_a_backup_keeps_what_deleted_accounts_had_left(own_database: str, project: Any, tmp_path: Path) -> None:
    db = Db(own_database)
    try:
        email = f"restored-{uuid.uuid4().hex[:8]}@example.test"
        user = db.create_user(email)
        with db.as_service() as conn:
            for _ in range(4):
                conn.execute("select public.consume_expansion_credit(%s)", (user,))
            conn.execute("delete from public.users where id = %s", (user,))
    finally:
        db.close()
    backup(own_database, tmp_path / "backup.dump")
    with psycopg.connect(own_database, autocommit=True) as conn:
        restore(conn, own_database, project, tmp_path / "backup.dump")
    db = Db(own_database)
    try:
        assert db.usage(db.create_user(email))["free_expansions_remaining"] == 1
        assert db.scalar("select count(*) from public.payment_receipts") == 0
        assert db.scalar("select count(*) from public.credit_charges where status = 'captured'") == 4
    finally:
        db.close()


def test_reset_data_forgets_deleted_accounts(own_database: str) -> None:
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("insert into public.users (email) values ('gone@example.test')")
        conn.execute("delete from public.users where email = 'gone@example.test'")
        assert conn.execute("select count(*) from private.deleted_accounts").fetchone() == (1,)
        reset_data(conn, admin_email="admin@example.com")
        assert conn.execute("select count(*) from private.deleted_accounts").fetchone() == (0,)


@over_both_clients
def test_a_charge_racing_the_deletion_is_not_given_back(client: IdeaExpansion, db: Db) -> None:
    email = f"racer-{uuid.uuid4().hex[:8]}@example.test"
    user = client.users.create(email=email)
    client.credits.consume(user.id)
    errors: list[BaseException] = []
    with db.as_service() as racing:  # a charge in progress holds the balance
        racing.execute("select public.consume_expansion_credit(%s)", (user.id,))

        def delete() -> None:
            try:
                client.users.delete(user.id)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        deleter = threading.Thread(target=delete)
        deleter.start()
        time.sleep(0.3)
        assert deleter.is_alive(), "the deletion must wait for the charge in progress"
    deleter.join(10)
    assert not errors
    assert client.credits.balance(client.users.create(email=email).id).free_expansions_remaining == 3


# -- input limits ---------------------------------------------------------------------------------------
@pytest.fixture
def writer(db: Db) -> uuid.UUID:
    return db.create_user()


def test_idea_elements_are_bounded_by_the_database(db: Db, writer: uuid.UUID) -> None:
    insert = "insert into public.ideas (user_id, title, bullets, external_links) values (%s, 't', %s, %s)"
    cases: list[tuple[str, list[Any], list[Any]]] = [
        ("ideas_bullets_items_check", ["b" * (20 * 1024 * 1024)], []),  # the 20 MB bullet of the issue
        ("ideas_bullets_items_check", ["b" * (MAX_BULLET_CHARS + 1)], []),
        ("ideas_bullets_items_check", [1], []),
        ("ideas_bullets_items_check", [{"nested": "x" * 100}], []),
        ("ideas_bullets_items_check", [["x"]], []),
        ("ideas_bullets_items_check", [None], []),
        ("ideas_bullets_items_check", ["   "], []),
        ("ideas_bullets_items_check", ["\t\n"], []),
        ("ideas_bullets_check", ["b"] * (MAX_BULLETS + 1), []),
        ("ideas_external_links_items_check", [], ["l" * (MAX_LINK_CHARS + 1)]),
        ("ideas_external_links_items_check", [], [{"href": "https://x.test"}]),
        ("ideas_external_links_items_check", [], [""]),
        ("ideas_external_links_check", [], ["l"] * (MAX_LINKS + 1)),
    ]
    before = db.scalar("select count(*) from public.ideas where user_id = %s", (writer,))
    for constraint, bullets, links in cases:
        error = refused(db, insert, (writer, Jsonb(bullets), Jsonb(links)), role="authenticated", user=writer)
        assert (error.sqlstate, error.diag.constraint_name) == ("23514", constraint), (constraint, str(bullets)[:40])
    assert db.scalar("select count(*) from public.ideas where user_id = %s", (writer,)) == before
    # At every limit, an idea is accepted.
    with db.as_user(writer) as conn:
        conn.execute(
            "insert into public.ideas (user_id, title, description, bullets, external_links) "
            "values (%s, %s, %s, %s, %s)",
            (
                writer,
                "t" * MAX_TITLE_CHARS,
                "d" * MAX_DESCRIPTION_CHARS,
                Jsonb(["b" * MAX_BULLET_CHARS] * MAX_BULLETS),
                Jsonb(["l" * MAX_LINK_CHARS] * MAX_LINKS),
            ),
        )


def test_python_limits_equal_the_databases(db: Db, writer: uuid.UUID) -> None:
    insert = (
        "insert into public.ideas (user_id, title, description, bullets, external_links) "
        "values (%(user)s, %(title)s, %(description)s, %(bullets)s, %(external_links)s)"
    )
    base: dict[str, Any] = {"title": "t", "description": None, "bullets": [], "external_links": []}
    for name, at_limit, over in (
        ("title", "t" * MAX_TITLE_CHARS, "t" * (MAX_TITLE_CHARS + 1)),
        ("description", "d" * MAX_DESCRIPTION_CHARS, "d" * (MAX_DESCRIPTION_CHARS + 1)),
        ("bullets", ["b" * MAX_BULLET_CHARS], ["b" * (MAX_BULLET_CHARS + 1)]),
        ("bullets", ["b"] * MAX_BULLETS, ["b"] * (MAX_BULLETS + 1)),
        ("external_links", ["l" * MAX_LINK_CHARS], ["l" * (MAX_LINK_CHARS + 1)]),
        ("external_links", ["l"] * MAX_LINKS, ["l"] * (MAX_LINKS + 1)),
    ):
        for value, ok in ((at_limit, True), (over, False)):
            values = {**base, name: value}
            row = {**values, "user": writer, "bullets": Jsonb(values["bullets"])}
            row["external_links"] = Jsonb(values["external_links"])
            if ok:
                parse_params(IdeaCreate, **values)
                with db.as_user(writer) as conn:
                    conn.execute(insert, row)
            else:
                with pytest.raises(InvalidRequestError):
                    parse_params(IdeaCreate, **values)
                assert refused(db, insert, row, role="authenticated", user=writer).sqlstate == "23514", name


@pytest.fixture
def post(db: Db, writer: uuid.UUID) -> uuid.UUID:
    with db.as_service() as conn:
        # A delivered, charged run: only a charged run's post may be public (uncharged_posts_private).
        execution = conn.execute(
            "insert into public.executions (user_id, status, current_stage, charged, generation, completed_at) "
            "values (%s, 'completed', 'done', true, 'offline', now()) returning id",
            (writer,),
        )
        execution_id = execution.fetchone()[0]  # type: ignore[index]
        output = conn.execute(
            "insert into public.outputs (execution_id, user_id, format, content) "
            "values (%s, %s, 'blog_post', '{}') returning id",
            (execution_id, writer),
        ).fetchone()[0]  # type: ignore[index]
        return uuid.UUID(
            str(
                conn.execute(
                    "insert into public.blog_posts (output_id, user_id, title, slug, markdown_content, html_content) "
                    "values (%s, %s, 't', %s, 'm', 'h') returning id",
                    (output, writer, f"p-{uuid.uuid4().hex[:8]}"),
                ).fetchone()[0]  # type: ignore[index]
            )
        )


def test_blog_tags_are_bounded_by_the_database(db: Db, writer: uuid.UUID, post: uuid.UUID) -> None:
    update = "update public.blog_posts set tags = %s where id = %s"
    for tags, constraint in (
        (["t" * (MAX_TAG_CHARS + 1)], "blog_posts_tags_items_check"),
        (["t" * (1024 * 1024)], "blog_posts_tags_items_check"),
        ([""], "blog_posts_tags_items_check"),
        (["  "], "blog_posts_tags_items_check"),
        (["\t"], "blog_posts_tags_items_check"),
        ([None], "blog_posts_tags_items_check"),
        ([f"t{i}" for i in range(MAX_TAGS + 1)], "blog_posts_tags_check"),
    ):
        error = refused(db, update, (tags, post), role="authenticated", user=writer)
        assert (error.sqlstate, error.diag.constraint_name) == ("23514", constraint), str(tags)[:40]
    # Arrays that are no list of tags: two dimensions, or counted from 0 (each would break every reader).
    for literal in ("{{a,b},{c,d}}", "[0:1]={a,b}"):
        error = refused(
            db,
            "update public.blog_posts set tags = %s::text[] where id = %s",
            (literal, post),
            role="authenticated",
            user=writer,
        )
        assert (error.sqlstate, error.diag.constraint_name) == ("23514", "blog_posts_tags_items_check"), literal
    assert db.scalar("select tags from public.blog_posts where id = %s", (post,)) == []
    at_limit = [f"{i:02d}" + "t" * (MAX_TAG_CHARS - 2) for i in range(MAX_TAGS)]
    with db.as_user(writer) as conn:
        conn.execute(update, (at_limit, post))
    assert db.scalar("select tags from public.blog_posts where id = %s", (post,)) == at_limit


# -- files ----------------------------------------------------------------------------------------------
@over_both_clients
def test_the_images_bucket_limits_file_size(client: IdeaExpansion, db: Db) -> None:
    assert db.scalar("select file_size_limit from storage.buckets where id = 'images'") == 5 * 1024 * 1024
    user = client.users.create(email=f"files-{uuid.uuid4().hex[:8]}@example.test")
    with pytest.raises(InvalidRequestError, match="bytes"):
        client.for_user(user.id).storage.upload(f"{user.id}/big.png", b"\x89PNG" + b"0" * (5 * 1024 * 1024))
    assert db.scalar("select count(*) from storage.objects where name like %s", (f"{user.id}/%",)) == 0


def test_a_user_stores_a_bounded_number_of_images(db: Db) -> None:
    user, other = db.create_user(), db.create_user()
    insert = "insert into storage.objects (bucket_id, name, owner) values ('images', %s, %s)"
    with db.admin() as conn:  # already at the cap but one
        conn.execute(
            "insert into storage.objects (bucket_id, name, owner) "
            "select 'images', %s || '/' || i || '.png', %s from generate_series(1, %s) i",
            (str(user), user, MAX_IMAGES_PER_USER - 1),
        )
    with db.as_user(user) as conn:
        conn.execute(insert, (f"{user}/last.png", user))
    error = refused(db, insert, (f"{user}/one-too-many.png", user), role="authenticated", user=user)
    assert error.sqlstate == "42501"
    with db.as_user(other) as conn:  # another user's folder is not affected
        conn.execute(insert, (f"{other}/mine.png", other))
    with db.as_user(user) as conn:  # removing one frees a slot
        conn.execute("delete from storage.objects where bucket_id = 'images' and name = %s", (f"{user}/1.png",))
        conn.execute(insert, (f"{user}/again.png", user))
    assert db.scalar("select count(*) from storage.objects where name like %s", (f"{user}/%",)) == MAX_IMAGES_PER_USER
    # An older snapshot would miss uploads committed while it waited for the lock: refused outright.
    with db.pool.connection() as conn:
        conn.execute("begin isolation level repeatable read")
        try:
            apply_request_context(conn, "authenticated", other)
            with pytest.raises(psycopg.Error) as stale:
                conn.execute(insert, (f"{other}/snapshot.png", other))
        finally:
            conn.execute("rollback")
    assert (stale.value.sqlstate, "read committed" in str(stale.value)) == ("55000", True)


# -- a bounded prompt -----------------------------------------------------------------------------------
@dataclass
class RecordingProvider:
    """The offline provider, recording the characters each call would send a language model."""

    name: str = "recording-offline"
    prompts: list[tuple[Task, int]] = field(default_factory=list)
    _offline: OfflineProvider = field(default_factory=OfflineProvider)

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        self.prompts.append((task, len(SYSTEM.encode()) + len(_user_message(task, idea, instructions).encode())))
        return self._offline.generate(task, schema, idea=idea, instructions=instructions)


def _words(length: int) -> str:
    """Text of exactly `length` characters that does not end in a blank (ideas are stored trimmed)."""
    text = ("ideas " * length)[:length]
    return text[:-1] + "s" if text.endswith(" ") else text


def _largest_brief() -> IdeaBrief:
    return IdeaBrief(
        title=_words(MAX_TITLE_CHARS),
        description=_words(MAX_DESCRIPTION_CHARS),
        bullets=(_words(MAX_BULLET_CHARS),) * MAX_BULLETS,
        external_links=("https://l.test/" + "l" * (MAX_LINK_CHARS - 15),) * MAX_LINKS,
    )


def test_an_idea_prompt_is_bounded_whatever_the_brief() -> None:
    assert len(_largest_brief().as_prompt()) == MAX_IDEA_PROMPT_CHARS
    assert f"at most {MAX_IDEA_PROMPT_CHARS:,} characters of the idea" in README.read_text()
    huge = IdeaBrief(
        title="T" * 100_000,
        description="D\n" * 100_000,
        bullets=tuple("b" * 100_000 for _ in range(1_000)),
        external_links=tuple("l" * 100_000 for _ in range(1_000)),
    )
    assert len(huge.as_prompt()) <= MAX_IDEA_PROMPT_CHARS
    small = IdeaBrief(title="Regex", description="Explain.", bullets=("offline",), external_links=("https://x.test",))
    assert small.as_prompt() == "Title: Regex\nDescription: Explain.\n- offline\nLink: https://x.test"


def test_the_worst_case_prompt_per_credit_is_bounded_and_stated(client: IdeaExpansion) -> None:
    user = client.users.create(email=f"prompt-{uuid.uuid4().hex[:8]}@example.test")
    brief = _largest_brief()
    idea = client.ideas.create(
        user_id=user.id,
        title=brief.title,
        description=brief.description,
        bullets=list(brief.bullets),
        external_links=list(brief.external_links),
    )
    provider = RecordingProvider()
    with Pipeline(client, provider=provider) as pipeline:
        pipeline.expand(user.id, idea_id=idea.id)
    tasks = [task for task, _ in provider.prompts]
    assert tasks[:2] == ["judge", "choose_format"]
    # model_usage: every call's prompt (in UTF-8 bytes, at least its tokens) stays under its ceiling
    for task, size in provider.prompts:
        assert size <= call_ceiling(task).input_tokens, task
    worst = worst_case_tokens_per_credit()
    assert worst <= 600_000, "one credit must not buy an unbounded prompt"
    # a chain of model providers multiplies it: each may fail a call after spending up to its ceiling
    assert worst_case_tokens_per_credit(model_providers=3) == 3 * worst
    stated = re.search(r"at most \*\*([0-9,]+) tokens\*\* per\s+credit", README.read_text())
    assert stated is not None, "the README states the worst-case tokens per credit"
    assert int(stated.group(1).replace(",", "")) == worst


# -- per-user idempotency keys --------------------------------------------------------------------------
@pytest.fixture
def two_users(client: IdeaExpansion) -> tuple[uuid.UUID, uuid.UUID]:
    first, second = (client.users.create(email=f"key-{uuid.uuid4().hex[:8]}@example.test").id for _ in range(2))
    return first, second


@over_both_clients
def test_an_idempotency_key_is_scoped_to_its_user(
    client: IdeaExpansion, two_users: tuple[uuid.UUID, uuid.UUID]
) -> None:
    first, second = two_users
    key = uuid.uuid4()
    for user in (first, second):
        client.ideas.create(user_id=user, title="same key, different users")
    run = client.expansions.start(first, idempotency_key=key, format="twitter_thread")
    other = client.expansions.start(second, idempotency_key=key, format="image")
    assert (run.created, other.created) == (True, True)  # neither blocked by the other's key
    assert other.execution.id != run.execution.id
    assert other.execution.user_id == second
    assert other.idea is not None  # nor shown the other's run
    assert other.idea.user_id == second
    again = client.expansions.start(second, idempotency_key=key)
    assert (again.created, again.execution.id) == (False, other.execution.id)
    # The same for a charge outside a run.
    charge_key = uuid.uuid4()
    assert client.credits.consume(first, idempotency_key=charge_key) == "free"
    assert client.credits.consume(second, idempotency_key=charge_key) == "free"
    assert client.credits.balance(second).total_expansions_used == 1
    # A key used by another user's run is, for this user, just a new key.
    assert client.credits.consume(second, idempotency_key=run.execution.id) == "free"
    assert client.credits.balance(second).total_expansions_used == 2


def test_older_references_are_made_plain_so_every_row_keeps_the_rule_and_restores(
    fresh_database: Any, project: Any, tmp_path: Path
) -> None:
    """References the old rules allowed (an inner space, a no-break space, two that differ only in case)
    get a plain form, their text kept in notes: the rule is then valid for every row, so a backup of
    such a database restores (a restore loads rows under every constraint)."""

    from idea_expansion.local import find_project
    from idea_expansion.local.migrations import migrate

    before = project_before(project, "20260101002000", tmp_path)
    url = migrated_database(fresh_database, before, prefix="ie_legacy_refs", seed=False)
    db = Db(url)
    try:
        user = db.create_user()
        for reference in ("BMC 123", "\u00a0BMC-NBSP", "bmc-case", "BMC-CASE", "BMC-PLAIN"):
            with db.as_service() as conn:
                conn.execute("select public.add_paid_credits(%s, 1, 1.00, %s, 'x', null)", (user, reference))
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, find_project(project.root))
        with db.admin() as conn:
            found = conn.execute("select bmc_reference, notes from public.payment_receipts order by created_at, id")
            rows = dict(found.fetchall())
        assert all(re.fullmatch(r"[A-Za-z0-9._:/#-]{1,200}", ref) for ref in rows), rows
        assert "bmc-case" in rows  # plain ones stay as they were
        assert "BMC-PLAIN" in rows
        kept = "\n".join(note or "" for note in rows.values())
        for original in ("BMC 123", "BMC-NBSP", "BMC-CASE"):
            assert f"original reference: {original}" in kept or original in kept, (original, kept)
        assert db.scalar(
            "select convalidated from pg_constraint where conname = 'payment_receipts_bmc_reference_format'"
        )
    finally:
        db.close()
    backup(url, tmp_path / "legacy.dump")
    with psycopg.connect(url, autocommit=True) as conn:
        restore(conn, url, project, tmp_path / "legacy.dump")
    db = Db(url)
    try:
        assert db.scalar("select count(*) from public.payment_receipts") == 5
    finally:
        db.close()
