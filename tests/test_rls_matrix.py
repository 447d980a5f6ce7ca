"""The RLS matrix: every table x select/insert/update/delete x anon / owner / another user / service_role.

Each cell runs as one PostgREST-style request (role + JWT claims) in a rolled-back transaction and
asserts its exact outcome: the number of rows it saw or changed, or SQLSTATE 42501 (a missing grant or
a WITH CHECK violation). Storage object policies are in the same matrix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from ._db import Db

ACTORS = ("anon", "owner", "other", "service")
OPS = ("select", "insert", "update", "delete")
DENIED = "42501"


@dataclass(frozen=True)
class Target:
    """How to exercise one table, and what each actor may do there."""

    table: str
    row: str  # which fixture row (key of the `rows` fixture) the select/update/delete cells aim at
    insert: str
    update_set: str
    expected: dict[str, tuple[Any, Any, Any, Any]]  # op -> outcome for (anon, owner, other, service)
    insert_setup: str | None = None
    id_column: str = "id"


# Rows owned by the user-only tables: owner reads, writes and deletes; others see nothing.
OWNED = {
    "select": (DENIED, 1, 0, 1),
    "insert": (DENIED, 1, DENIED, 1),
    "update": (DENIED, 1, 0, 1),
    "delete": (DENIED, 1, 0, 1),
}
# Service-written tables: the owner only reads.
READ_ONLY = {
    "select": (DENIED, 1, 0, 1),
    "insert": (DENIED, DENIED, DENIED, 1),
    "update": (DENIED, DENIED, DENIED, 1),
    "delete": (DENIED, DENIED, DENIED, 1),
}

TARGETS = [
    Target(
        "public.users",
        "owner",
        insert="insert into public.users (id, email) values (%(owner)s, %(owner_email)s) returning id",
        insert_setup="delete from public.users where id = '{owner}'",
        update_set="name = 'Renamed'",
        expected={
            "select": (DENIED, 1, 0, 1),
            "insert": (DENIED, DENIED, DENIED, 1),
            "update": (DENIED, 1, 0, 1),
            "delete": (DENIED, DENIED, DENIED, 1),
        },
    ),
    Target(
        "public.ideas",
        "idea",
        insert="insert into public.ideas (user_id, title) values (%(owner)s, 'New idea') returning id",
        update_set="title = 'Changed'",
        expected=OWNED,
    ),
    Target(
        "public.credentials",
        "credential",
        insert="insert into public.credentials (user_id, provider, encrypted_value) "
        "values (%(owner)s, 'openai', 'ciphertext') returning id",
        update_set="is_active = false",
        expected=OWNED,
    ),
    Target(
        "public.executions",
        "execution",
        insert="insert into public.executions (user_id) values (%(owner)s) returning id",
        update_set="error_message = 'tampered'",
        expected=READ_ONLY,
    ),
    Target(
        "public.outputs",
        "output",
        insert="insert into public.outputs (execution_id, user_id, format, content) "
        "values (%(execution)s, %(owner)s, 'blog_post', '{}') returning id",
        update_set="content = '{\"tampered\": true}'",
        expected=READ_ONLY,
    ),
    Target(
        "public.blog_posts",
        "private_post",
        insert="insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public) "
        "values (%(owner)s, 'T', 'matrix-new', 'm', 'h', false) returning id",
        update_set="title = 'Changed'",
        expected={
            "select": (0, 1, 0, 1),
            "insert": (DENIED, DENIED, DENIED, 1),
            "update": (DENIED, 1, 0, 1),
            "delete": (DENIED, 1, 0, 1),
        },
    ),
    Target(
        "public.blog_posts",
        "public_post",
        insert="insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public) "
        "values (%(owner)s, 'T', 'matrix-new-public', 'm', 'h', true) returning id",
        update_set="title = 'Changed'",
        expected={
            "select": (1, 1, 1, 1),
            "insert": (DENIED, DENIED, DENIED, 1),
            "update": (DENIED, 1, 0, 1),
            "delete": (DENIED, 1, 0, 1),
        },
    ),
    Target(
        "public.usage_tracking",
        "usage",
        insert="insert into public.usage_tracking (user_id) values (%(owner)s) returning id",
        insert_setup="delete from public.usage_tracking where user_id = '{owner}'",
        update_set="paid_credits_remaining = 1000",
        expected=READ_ONLY,
    ),
    Target(
        "public.payment_receipts",
        "receipt",
        insert="insert into public.payment_receipts (user_id, amount_usd, credits_purchased) "
        "values (%(owner)s, 1.00, 1) returning id",
        update_set="status = 'refunded'",
        expected=READ_ONLY,
    ),
    Target(
        "public.credit_charges",
        "charge",
        insert="insert into public.credit_charges (user_id, credit_type) values (%(owner)s, 'free') returning id",
        update_set="credit_type = 'paid'",
        expected=READ_ONLY,
    ),
    Target(
        "storage.objects",
        "object",
        insert="insert into storage.objects (bucket_id, name) values ('images', %(owner)s || '/new.png') returning id",
        update_set="metadata = '{\"size\": 1}'",
        expected={
            "select": (0, 1, 0, 1),
            "insert": (DENIED, 1, DENIED, 1),
            "update": (0, 1, 0, 1),
            "delete": (0, 1, 0, 1),
        },
    ),
]

CELLS = [
    pytest.param(target, op, actor, id=f"{target.table}[{target.row}]-{op}-{actor}")
    for target in TARGETS
    for op in OPS
    for actor in ACTORS
]


@pytest.fixture(scope="module")
def rows(db: Db) -> dict[str, Any]:
    """One row of every table owned by `owner`, plus `other`, a second user with rows of their own."""
    owner_email = f"owner-{uuid.uuid4().hex[:8]}@example.test"
    owner = db.create_user(owner_email)
    other = db.create_user()
    with db.as_service() as conn:

        def one(query: str, *params: Any) -> Any:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return row[0]

        idea = one("insert into public.ideas (user_id, title) values (%s, 'Owner idea') returning id", owner)
        credential = one(
            "insert into public.credentials (user_id, provider, encrypted_value) "
            "values (%s, 'github', 'c') returning id",
            owner,
        )
        # A finished run: a running one would (rightly) keep its idea from being deleted.
        execution = one(
            "insert into public.executions (user_id, selected_idea_id, status, completed_at) "
            "values (%s, %s, 'completed', now()) returning id",
            owner,
            idea,
        )
        output = one(
            "insert into public.outputs (execution_id, user_id, idea_id, format, content) "
            "values (%s, %s, %s, 'blog_post', '{}') returning id",
            execution,
            owner,
            idea,
        )
        private_post = one(
            "insert into public.blog_posts "
            "(output_id, user_id, title, slug, markdown_content, html_content, is_public) "
            "values (%s, %s, 'Private', 'private', 'm', 'h', false) returning id",
            output,
            owner,
        )
        public_post = one(
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public) "
            "values (%s, 'Public', 'public', 'm', 'h', true) returning id",
            owner,
        )
        usage = one("select id from public.usage_tracking where user_id = %s", owner)
        receipt = one("select public.add_paid_credits(%s, 1, 1.00, %s, 'matrix', null)", owner, f"BMC-{uuid.uuid4()}")
        charge_type = one("select public.consume_expansion_credit(%s)", owner)
        assert charge_type == "free"
        charge = one("select id from public.credit_charges where user_id = %s", owner)
        obj = one(
            "insert into storage.objects (bucket_id, name, owner) values ('images', %s || '/a.png', %s) returning id",
            str(owner),
            owner,
        )
    return {
        "owner": owner,
        "other": other,
        "owner_email": owner_email,
        "idea": idea,
        "credential": credential,
        "execution": execution,
        "output": output,
        "private_post": private_post,
        "public_post": public_post,
        "usage": usage,
        "receipt": receipt,
        "charge": charge,
        "object": obj,
    }


def run_cell(db: Db, rows: dict[str, Any], target: Target, op: str, actor: str) -> Any:
    role, user = {
        "anon": ("anon", None),
        "owner": ("authenticated", rows["owner"]),
        "other": ("authenticated", rows["other"]),
        "service": ("service_role", None),
    }[actor]
    params = {
        "owner": str(rows["owner"]),
        "owner_email": rows["owner_email"],
        "execution": rows["execution"],
        "id": rows[target.row],
    }
    statement = {
        "select": f"select {target.id_column} from {target.table} where id = %(id)s",
        "insert": target.insert,
        "update": f"update {target.table} set {target.update_set} where id = %(id)s returning id",
        "delete": f"delete from {target.table} where id = %(id)s returning id",
    }[op]
    setup = target.insert_setup.format(owner=rows["owner"]) if op == "insert" and target.insert_setup else None
    try:
        with db.request(role, user, commit=False, setup=setup) as conn:
            return len(conn.execute(statement, params).fetchall())
    except psycopg.Error as exc:
        return exc.sqlstate


@pytest.mark.parametrize(("target", "op", "actor"), CELLS)
def test_rls_cell(db: Db, rows: dict[str, Any], target: Target, op: str, actor: str) -> None:
    expected = target.expected[op][ACTORS.index(actor)]
    assert run_cell(db, rows, target, op, actor) == expected


def test_matrix_covers_every_public_table(db: Db) -> None:
    with db.admin() as conn:
        tables = {f"public.{r[0]}" for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
    assert tables == {t.table for t in TARGETS if t.table.startswith("public.")}
    print(f"\nRLS matrix: {len(CELLS)} cells ({len(TARGETS)} targets x {len(OPS)} operations x {len(ACTORS)} actors)")


@pytest.mark.parametrize(
    ("name", "bucket"),
    [("{other}/x.png", "images"), ("x.png", "images"), ("{owner}/x.png", "elsewhere")],
    ids=["another-users-folder", "bucket-root", "another-bucket"],
)
def test_owner_cannot_write_outside_own_images_folder(db: Db, rows: dict[str, Any], name: str, bucket: str) -> None:
    setup = "insert into storage.buckets (id, name) values ('elsewhere', 'elsewhere') on conflict do nothing"
    with pytest.raises(psycopg.Error) as denied, db.as_user(rows["owner"], commit=False, setup=setup) as conn:
        conn.execute(
            "insert into storage.objects (bucket_id, name) values (%s, %s)",
            (bucket, name.format(other=rows["other"], owner=rows["owner"])),
        )
    assert denied.value.sqlstate == DENIED


def test_owner_cannot_move_an_image_into_another_folder(db: Db, rows: dict[str, Any]) -> None:
    with pytest.raises(psycopg.Error) as denied, db.as_user(rows["owner"], commit=False) as conn:
        conn.execute(
            "update storage.objects set name = %s where id = %s",
            (f"{rows['other']}/stolen.png", rows["object"]),
        )
    assert denied.value.sqlstate == DENIED


def test_images_bucket_is_public_but_not_listable(db: Db) -> None:
    with db.admin() as conn:
        bucket = conn.execute(
            "select public, file_size_limit, allowed_mime_types from storage.buckets where id = 'images'"
        ).fetchone()
        anon_select = conn.execute(
            "select count(*) from pg_policies where schemaname = 'storage' and tablename = 'objects' "
            "and ('anon' = any(roles) or 'public' = any(roles)) and cmd in ('SELECT', 'ALL')"
        ).fetchone()
    assert bucket == (True, 5242880, ["image/png", "image/jpeg", "image/webp", "image/gif"])
    assert anon_select == (0,)


def test_user_cannot_change_email_or_judge_fields(db: Db, rows: dict[str, Any]) -> None:
    for statement in (
        "update public.users set email = 'x@example.test' where id = %(owner)s",
        "update public.ideas set priority_score = 100 where user_id = %(owner)s",
        "insert into public.ideas (user_id, title, status) values (%(owner)s, 't', 'expanded')",
        "update public.blog_posts set html_content = '<script>alert(1)</script>' where user_id = %(owner)s",
        "update public.blog_posts set markdown_content = 'x' where user_id = %(owner)s",
    ):
        with pytest.raises(psycopg.Error) as denied, db.as_user(rows["owner"], commit=False) as conn:
            conn.execute(statement, {"owner": rows["owner"]})
        assert denied.value.sqlstate == DENIED, statement


def test_a_blog_post_cannot_point_at_another_users_output(db: Db, rows: dict[str, Any]) -> None:
    """Even the service role cannot link one user's post to another user's output (composite key)."""
    with db.as_service() as conn:
        spare = conn.execute(
            "insert into public.outputs (execution_id, user_id, format, content) "
            "values (%s, %s, 'blog_post', '{}') returning id",
            (rows["execution"], rows["owner"]),
        ).fetchone()
    assert spare is not None
    with pytest.raises(psycopg.Error) as refused, db.as_service(commit=False) as conn:
        conn.execute(
            # Private, so that the refusal is the composite key's (a public post of an uncharged run is refused
            # earlier, by blog_posts_refuse_public_uncharged).
            "insert into public.blog_posts (output_id, user_id, title, slug, markdown_content, html_content, "
            "is_public) values (%s, %s, 't', 'hijack', 'm', 'h', false)",
            (spare[0], rows["other"]),
        )
    assert refused.value.sqlstate == "23503"
