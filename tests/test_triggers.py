"""Triggers: updated_at, the usage row of every new user, and the Supabase Auth -> public.users sync."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from ._db import Db


@pytest.mark.parametrize(
    ("table", "insert", "update"),
    [
        ("users", None, "update public.users set name = 'n' where id = %(user)s"),
        (
            "usage_tracking",
            None,
            "update public.usage_tracking set paid_credits_remaining = 1 where user_id = %(user)s",
        ),
        (
            "ideas",
            "insert into public.ideas (user_id, title) values (%(user)s, 't')",
            "update public.ideas set title = 'u' where user_id = %(user)s",
        ),
        (
            "credentials",
            "insert into public.credentials (user_id, provider, encrypted_value) values (%(user)s, 'github', 'c')",
            "update public.credentials set is_active = false where user_id = %(user)s",
        ),
        (
            "blog_posts",
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content) "
            "values (%(user)s, 't', 's', 'm', 'h')",
            "update public.blog_posts set title = 'u' where user_id = %(user)s",
        ),
    ],
)
def test_updated_at_moves_on_update(db: Db, table: str, insert: str | None, update: str) -> None:
    user = db.create_user()
    key = "id" if table == "users" else "user_id"
    with db.as_service() as conn:
        if insert:
            conn.execute(insert, {"user": user})
    before = db.scalar(f"select updated_at from public.{table} where {key} = %s", (user,))
    with db.as_service() as conn:
        conn.execute(update, {"user": user})
    after = db.scalar(f"select updated_at from public.{table} where {key} = %s", (user,))
    assert after > before


def test_new_user_gets_exactly_one_usage_row_with_five_free(db: Db) -> None:
    user = db.create_user()
    with db.admin() as conn:
        rows = conn.execute(
            "select free_expansions_remaining, paid_credits_remaining, total_expansions_used "
            "from public.usage_tracking where user_id = %s",
            (user,),
        ).fetchall()
    assert rows == [(5, 0, 0)]


def insert_auth_user(db: Db, user_id: uuid.UUID, email: str | None, meta: dict[str, str]) -> None:
    """What Supabase Auth (GoTrue, as supabase_auth_admin) does when someone signs in with GitHub with a
    verified address: the row arrives confirmed (unconfirmed sign-ups: tests/test_identity.py)."""
    with db.request("supabase_auth_admin") as conn:
        conn.execute(
            "insert into auth.users (id, aud, role, email, email_confirmed_at, raw_user_meta_data, created_at, "
            "updated_at) values (%s, 'authenticated', 'authenticated', %s, now(), %s, now(), now())",
            (user_id, email, json.dumps(meta)),
        )


def test_auth_sign_up_creates_profile_with_same_id_and_credits(db: Db) -> None:
    user_id = uuid.uuid4()
    email = f"GitHub-{user_id.hex[:8]}@Example.test"
    insert_auth_user(db, user_id, email, {"full_name": "Octo Cat", "user_name": "octocat"})
    with db.admin() as conn:
        profile = conn.execute("select email, name, timezone from public.users where id = %s", (user_id,)).fetchone()
    assert profile == (email.lower(), "Octo Cat", "UTC")
    assert db.usage(user_id)["free_expansions_remaining"] == 5
    # the user's own JWT (sub = auth.users.id) now sees the profile through RLS
    with db.as_user(user_id) as conn:
        assert conn.execute("select count(*) from public.users").fetchone() == (1,)


def test_auth_email_change_and_delete_follow(db: Db) -> None:
    user_id = uuid.uuid4()
    insert_auth_user(db, user_id, f"a-{user_id.hex[:8]}@example.test", {"user_name": "a"})
    new_email = f"b-{user_id.hex[:8]}@example.test"
    with db.request("supabase_auth_admin") as conn:
        conn.execute("update auth.users set email = %s where id = %s", (new_email, user_id))
    assert db.scalar("select email from public.users where id = %s", (user_id,)) == new_email
    with db.request("supabase_auth_admin") as conn:
        conn.execute("delete from auth.users where id = %s", (user_id,))
    assert db.scalar("select count(*) from public.users where id = %s", (user_id,)) == 0
    assert db.scalar("select count(*) from public.usage_tracking where user_id = %s", (user_id,)) == 0


def test_auth_user_without_email_gets_no_profile(db: Db) -> None:
    user_id = uuid.uuid4()
    insert_auth_user(db, user_id, None, {})
    assert db.scalar("select count(*) from public.users where id = %s", (user_id,)) == 0


def test_auth_sign_up_cannot_take_over_an_existing_email(db: Db) -> None:
    email = f"taken-{uuid.uuid4().hex[:8]}@example.test"
    existing = uuid.uuid4()  # a profile of another auth identity (one the service created is linked instead)
    insert_auth_user(db, existing, email, {})
    intruder = uuid.uuid4()
    with pytest.raises(psycopg.Error) as refused:
        insert_auth_user(db, intruder, email, {})
    assert refused.value.sqlstate == "23505"
    assert db.scalar("select count(*) from auth.users where id = %s", (intruder,)) == 0
    assert db.scalar("select id from public.users where email = %s", (email,)) == existing
