"""Identity: a profile belongs to a confirmed e-mail address; one person has one id (an SDK-created
profile is linked to the Supabase Auth identity that later confirms its address; on REST the service
creates users through Supabase Auth itself); access tokens signed with Supabase's asymmetric keys are
verified through the project's JWKS.

Supabase Auth cannot run here: its writes to auth.users are made as `supabase_auth_admin`, exactly as
GoTrue makes them, and its admin API is replayed from recorded responses (respx)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from idea_expansion import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IdeaExpansion,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    Settings,
    generate_key,
)
from idea_expansion.backends.rest import RestBackend
from idea_expansion.local import find_project
from idea_expansion.local.migrations import migrate
from idea_expansion.pipeline import Pipeline

from ._clients import client_of_kind, over_both_clients
from ._db import Db
from .conftest import migrated_database, project_before


@pytest.fixture
def client(request: pytest.FixtureRequest, client: IdeaExpansion) -> IdeaExpansion:
    """The service client: the sync one, or both in turn for the tests marked `@over_both_clients`."""
    chosen: IdeaExpansion = client_of_kind(request, client)
    return chosen


IDENTITY_MIGRATION = "20260101001800"
USER_TABLES = (
    "ideas",
    "credentials",
    "executions",
    "outputs",
    "blog_posts",
    "usage_tracking",
    "payment_receipts",
    "credit_charges",
)


def address(prefix: str = "id") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.test"


def auth_sign_up(
    db: Db, user_id: uuid.UUID, email: str | None, *, confirmed: bool, meta: dict[str, str] | None = None
) -> None:
    """What Supabase Auth (as supabase_auth_admin) writes for a sign-up: with confirmations on, an
    e-mail sign-up is unconfirmed until the link is clicked; a GitHub sign-in with a verified address
    arrives confirmed."""
    with db.request("supabase_auth_admin") as conn:
        conn.execute(
            "insert into auth.users (id, aud, role, email, email_confirmed_at, raw_user_meta_data, created_at, "
            "updated_at) values (%s, 'authenticated', 'authenticated', %s, case when %s then now() end, %s, "
            "now(), now())",
            (user_id, email, confirmed, json.dumps(meta or {})),
        )


def auth_confirm(db: Db, user_id: uuid.UUID, *, email: str | None = None) -> list[str]:
    """The confirmation link was clicked (`email`: a change to this address was confirmed). Returns the
    warnings the database raised, which Postgres writes to its log."""
    warnings: list[str] = []

    def collect(notice: psycopg.errors.Diagnostic) -> None:
        if notice.severity_nonlocalized == "WARNING":
            warnings.append(f"{notice.message_primary} {notice.message_hint}")

    with db.request("supabase_auth_admin") as conn:
        conn.add_notice_handler(collect)
        try:
            conn.execute(
                "update auth.users set email = coalesce(%s, email), email_confirmed_at = now() where id = %s",
                (email, user_id),
            )
        finally:
            conn.remove_notice_handler(collect)
    return warnings


def owned_rows(db: Db, user_id: uuid.UUID) -> dict[str, int]:
    with db.admin() as conn:
        return {
            table: conn.execute(f"select count(*) from public.{table} where user_id = %s", (user_id,)).fetchone()[0]  # type: ignore[index]
            for table in USER_TABLES
        }


# -- a profile belongs to a confirmed identity -------------------------------------------------------
def test_an_unconfirmed_sign_up_gets_no_profile_until_it_is_confirmed(db: Db) -> None:
    user_id = uuid.uuid4()
    auth_sign_up(db, user_id, address("Later").upper(), confirmed=False, meta={"full_name": "Later On"})
    assert db.scalar("select count(*) from public.users where id = %s", (user_id,)) == 0
    auth_confirm(db, user_id)
    assert db.scalar("select name from public.users where id = %s", (user_id,)) == "Later On"
    assert db.usage(user_id)["free_expansions_remaining"] == 5


@over_both_clients
def test_a_squatter_never_gets_the_victims_profile_token_or_credits(client: IdeaExpansion, db: Db) -> None:
    """A squatter signs up with the victim's address and never confirms it. The victim's GitHub sign-in,
    their ideas, their token and an admin's grant by e-mail all stay out of the squatter's session."""
    victim_email = address("victim")
    squatter = uuid.uuid4()
    auth_sign_up(db, squatter, victim_email, confirmed=False)

    victim = client.users.sign_in_with_github(email=victim_email, login="victim", access_token="gho_victims_token")
    assert victim.id != squatter
    client.ideas.create(user_id=victim.id, title="The victim's private idea")
    receipt = client.credits.grant(victim_email, 3, "3.00", f"BMC-{uuid.uuid4().hex[:8]}")
    assert receipt.user_id == victim.id

    with db.as_user(squatter) as conn:
        seen = {
            table: conn.execute(f"select count(*) from public.{table}").fetchone()[0]  # type: ignore[index]
            for table in ("users", "ideas", "credentials", "usage_tracking", "payment_receipts")
        }
    assert seen == dict.fromkeys(seen, 0)
    assert client.for_user(victim.id).credentials.get_secret("github") == "gho_victims_token"


@over_both_clients
def test_a_sign_up_older_than_the_profile_never_takes_it_when_confirmed(client: IdeaExpansion, db: Db) -> None:
    """F2: Supabase Auth keeps the first registrant's password when the address signs up again, and a
    confirmation never changes it. So a squatter's pending sign-up, confirmed later by the owner's click,
    must not take the profile (credits, ideas, receipts) the service made for the owner after it: the
    confirmation succeeds and that auth user stays without a profile, with a warning in the log."""
    victim_email = address("gh-victim")
    squatter = uuid.uuid4()
    auth_sign_up(db, squatter, victim_email, confirmed=False)  # the squatter's password
    victim = client.users.sign_in_with_github(email=victim_email, login="victim", access_token="gho_victim")
    client.credits.grant(victim_email, 50, "50.00", f"BMC-{uuid.uuid4().hex[:8]}")
    client.ideas.create(user_id=victim.id, title="The victim's idea")
    before = owned_rows(db, victim.id)

    warnings = auth_confirm(db, squatter)  # the victim clicks the (resent) confirmation link

    assert db.scalar("select id from public.users where email = %s", (victim_email,)) == victim.id
    assert owned_rows(db, victim.id) == before
    assert db.usage(victim.id)["paid_credits_remaining"] == 50
    assert db.scalar("select count(*) from public.users where id = %s", (squatter,)) == 0
    with db.as_user(squatter) as conn:
        for table in ("users", "ideas", "credentials", "usage_tracking", "payment_receipts"):
            assert conn.execute(f"select count(*) from public.{table}").fetchone() == (0,), table
    assert any(str(squatter) in w and str(victim.id) in w for w in warnings), warnings

    # Same when an auth user that predates the profile (phone-only here) adds the address to itself.
    phone_user = uuid.uuid4()
    auth_sign_up(db, phone_user, None, confirmed=False)
    owner = client.users.create(email=address("added"))
    assert auth_confirm(db, phone_user, email=owner.email)
    assert db.scalar("select id from public.users where email = %s", (owner.email,)) == owner.id
    assert db.scalar("select count(*) from public.users where id = %s", (phone_user,)) == 0


@over_both_clients
def test_addresses_are_ascii_so_no_look_alike_reaches_another_profile(client: IdeaExpansion, db: Db) -> None:
    """lower() folds the Kelvin sign (U+212A) onto k and the dotted capital I (U+0130) onto i: a
    sign-up with such an address took the ASCII address's profile on confirmation."""
    for plain, look_alike in (("kate", "\u212aate"), ("ivy", "\u0130vy")):
        email = address(plain)
        owner = client.users.create(email=email)
        spoof = look_alike + email[len(plain) :]
        with pytest.raises(InvalidRequestError, match="ASCII"):
            client.users.create(email=spoof)
        with pytest.raises(InvalidRequestError, match="ASCII"):
            client.users.sign_in_with_github(email=spoof, login="spoof", access_token="gho_spoof")
        pending, arriving = uuid.uuid4(), uuid.uuid4()  # both after the profile: only the address differs
        auth_sign_up(db, pending, spoof, confirmed=False)
        with pytest.raises(psycopg.Error) as refused:
            auth_confirm(db, pending)
        assert refused.value.sqlstate == "23514"
        with pytest.raises(psycopg.Error) as refused:
            auth_sign_up(db, arriving, spoof, confirmed=True)
        assert refused.value.sqlstate == "23514"
        assert db.scalar("select id from public.users where email = %s", (email,)) == owner.id
        assert db.scalar("select count(*) from public.credentials where user_id = %s", (owner.id,)) == 0
    with pytest.raises(psycopg.Error) as refused, db.as_service() as conn:
        conn.execute("insert into public.users (email) values (%s)", (address("k\u00e5te"),))
    assert refused.value.diag.constraint_name == "users_email_ascii"


# -- one person, one id ------------------------------------------------------------------------------
def test_every_reference_to_a_user_follows_the_profile_id(db: Db) -> None:
    """Linking re-keys a profile to its auth id: every foreign key that carries a user id cascades, and
    the relinking test below covers every table that holds one."""
    with db.admin() as conn:
        holders = conn.execute(
            "select c.table_name from information_schema.columns c join pg_tables t "
            "on t.schemaname = c.table_schema and t.tablename = c.table_name "
            "where c.table_schema = 'public' and c.column_name = 'user_id'"
        ).fetchall()
        assert sorted(t for (t,) in holders) == sorted(USER_TABLES)
        stale = conn.execute(
            """
            select c.conrelid::regclass::text || '.' || c.conname
              from pg_constraint c
             where c.contype = 'f' and c.connamespace = 'public'::regnamespace and c.confupdtype <> 'c'
               and (c.confrelid = 'public.users'::regclass
                    or exists (select 1 from unnest(c.conkey) k join pg_attribute a
                                 on a.attrelid = c.conrelid and a.attnum = k where a.attname = 'user_id'))
            """
        ).fetchall()
    assert stale == []


def test_an_sdk_user_who_signs_up_later_keeps_everything_under_the_auth_id(client: IdeaExpansion, db: Db) -> None:
    email = address("sdk")
    sdk_user = client.users.create(email=email, name="Ada", timezone="Europe/Paris")
    idea = client.ideas.create(user_id=sdk_user.id, title="Explain regular expressions", bullets=["cli"])
    client.ideas.create(user_id=sdk_user.id, title="A second idea")
    client.credentials.set("openai", "sk-sealed-to-the-old-id", user_id=sdk_user.id)
    client.credits.grant(email, 2, "2.00", f"BMC-{uuid.uuid4().hex[:8]}")
    with Pipeline(client) as pipeline:
        pipeline.expand(sdk_user.id, idea_id=idea.id, format="blog_post")
    before = owned_rows(db, sdk_user.id)
    assert all(before.values()), f"the scenario must cover every table that holds a user id: {before}"
    usage = db.usage(sdk_user.id)

    auth_id = uuid.uuid4()
    auth_sign_up(db, auth_id, email.upper(), confirmed=False, meta={"full_name": "Someone Else"})
    assert client.users.get_by_email(email).id == sdk_user.id  # an unconfirmed claim changes nothing
    auth_confirm(db, auth_id)

    linked = client.users.get_by_email(email)
    assert (linked.id, linked.name, linked.timezone, linked.created_at) == (
        auth_id,
        "Ada",
        "Europe/Paris",
        sdk_user.created_at,
    )
    assert owned_rows(db, sdk_user.id) == dict.fromkeys(USER_TABLES, 0)
    # Stored secrets are sealed to the id they were stored for, so they are dropped; the rest moves.
    assert owned_rows(db, auth_id) == before | {"credentials": 0}
    moved_usage = db.usage(auth_id)
    assert {k: v for k, v in moved_usage.items() if k not in ("user_id", "updated_at")} == {
        k: v for k, v in usage.items() if k not in ("user_id", "updated_at")
    }
    assert len(list(client.for_user(auth_id).ideas.list())) == 2

    # A GitHub sign-in through Supabase Auth arrives confirmed: linked on insert.
    other = client.users.create(email=address("gh"))
    github_id = uuid.uuid4()
    auth_sign_up(db, github_id, other.email, confirmed=True, meta={"user_name": "octocat"})
    assert client.users.get_by_email(other.email).id == github_id
    assert db.usage(github_id)["free_expansions_remaining"] == 5


def test_a_profile_of_another_auth_identity_is_never_merged(db: Db) -> None:
    email = address("owned")
    owner = uuid.uuid4()
    auth_sign_up(db, owner, email, confirmed=True)
    intruder = uuid.uuid4()

    with pytest.raises(psycopg.Error) as refused:
        auth_sign_up(db, intruder, email, confirmed=True)
    assert refused.value.sqlstate == "23505"
    assert db.scalar("select count(*) from auth.users where id = %s", (intruder,)) == 0

    auth_sign_up(db, intruder, email, confirmed=False)  # allowed, and gets nothing ...
    with pytest.raises(psycopg.Error) as refused:  # ... and confirming it takes nothing over
        auth_confirm(db, intruder)
    assert refused.value.sqlstate == "23505"

    other = uuid.uuid4()
    auth_sign_up(db, other, address("other"), confirmed=True)
    with pytest.raises(psycopg.Error) as refused, db.request("supabase_auth_admin") as conn:
        conn.execute("update auth.users set email = %s where id = %s", (email, other))
    assert refused.value.sqlstate == "23505"
    assert db.scalar("select id from public.users where email = %s", (email,)) == owner
    assert db.scalar("select count(*) from public.users where id in (%s, %s)", (intruder, other)) == 1


def test_the_migration_detaches_profiles_of_unconfirmed_sign_ups(fresh_database, project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Profiles the old trigger gave to unconfirmed sign-ups leave that identity (with what the service
    merged into them by e-mail). That identity is older than the detached profile, so its confirmation
    (perhaps the owner's click on a squatter's sign-up) never takes it back; a newer sign-up's does."""
    before = project_before(project, IDENTITY_MIGRATION, tmp_path)
    url = migrated_database(fresh_database, before, prefix="ie_identity", seed=False)
    db = Db(url)
    try:
        email, squatter = address("legacy"), uuid.uuid4()
        confirmed_email, confirmed = address("kept"), uuid.uuid4()
        auth_sign_up(db, squatter, email, confirmed=False)
        auth_sign_up(db, confirmed, confirmed_email, confirmed=True)
        with db.as_service() as conn:
            conn.execute("insert into public.ideas (user_id, title) values (%s, 'merged by e-mail')", (squatter,))
            conn.execute(
                "insert into public.credentials (user_id, provider, encrypted_value) values (%s, 'github', 'c')",
                (squatter,),
            )
        assert db.scalar("select id from public.users where email = %s", (email,)) == squatter
        legacy_unicode = db.create_user(address("k\u00e5te"))  # allowed before: kept, the check not validated

        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, find_project(project.root))

        assert db.scalar("select count(*) from public.users where id = %s", (legacy_unicode,)) == 1
        assert db.scalar("select convalidated from pg_constraint where conname = 'users_email_ascii'") is False
        with pytest.raises(psycopg.Error) as refused, db.as_service() as conn:
            conn.execute("insert into public.users (email) values (%s)", (address("n\u00e9w"),))
        assert refused.value.diag.constraint_name == "users_email_ascii"

        detached = db.scalar("select id from public.users where email = %s", (email,))
        assert detached not in (None, squatter)
        assert owned_rows(db, squatter) == dict.fromkeys(USER_TABLES, 0)
        assert db.scalar("select count(*) from public.ideas where user_id = %s", (detached,)) == 1
        assert db.scalar("select count(*) from public.credentials where user_id = %s", (detached,)) == 0
        assert db.scalar("select id from public.users where email = %s", (confirmed_email,)) == confirmed

        assert auth_confirm(db, squatter)  # a warning: not linked
        assert db.scalar("select id from public.users where email = %s", (email,)) == detached
        assert db.scalar("select count(*) from public.users where id = %s", (squatter,)) == 0

        with db.request("supabase_auth_admin") as conn:  # the documented remedy: delete that auth user ...
            conn.execute("delete from auth.users where id = %s", (squatter,))
        owner = uuid.uuid4()  # ... and the person signs up again
        auth_sign_up(db, owner, email, confirmed=False)
        assert auth_confirm(db, owner) == []
        assert db.scalar("select id from public.users where email = %s", (email,)) == owner
        assert db.scalar("select count(*) from public.ideas where user_id = %s", (owner,)) == 1
    finally:
        db.close()


# -- REST: users are created through Supabase Auth's admin API ---------------------------------------
URL = "https://proj.supabase.co"
NOW = "2026-11-26T04:48:54.460630+00:00"


def auth_user(user_id: uuid.UUID, email: str, name: str | None) -> dict[str, Any]:
    """GoTrue's answer to POST /auth/v1/admin/users with email_confirm: true."""
    return {
        "id": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "email_confirmed_at": NOW,
        "phone": "",
        "confirmed_at": NOW,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"name": name, "email_verified": True} if name else {"email_verified": True},
        "identities": [
            {
                "identity_id": str(uuid.uuid4()),
                "id": str(user_id),
                "user_id": str(user_id),
                "identity_data": {
                    "email": email,
                    "email_verified": False,
                    "phone_verified": False,
                    "sub": str(user_id),
                },
                "provider": "email",
                "last_sign_in_at": NOW,
                "created_at": NOW,
                "updated_at": NOW,
                "email": email,
            }
        ],
        "created_at": NOW,
        "updated_at": NOW,
        "is_anonymous": False,
    }


def profile(user_id: uuid.UUID, email: str, name: str | None, timezone: str = "UTC") -> dict[str, Any]:
    return {
        "id": str(user_id),
        "email": email,
        "name": name,
        "timezone": timezone,
        "created_at": NOW,
        "updated_at": NOW,
    }


def credential(user_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "provider": "github",
        "is_active": True,
        "validation_status": "not_checked",
        "last_validated_at": None,
        "created_at": NOW,
        "updated_at": NOW,
        "encrypted_value": "{}",
    }


# GoTrue answers clients that send X-Supabase-Api-Version (supabase-py does) in this shape.
EMAIL_EXISTS = httpx.Response(
    422,
    json={"code": "email_exists", "message": "A user with this email address has already been registered"},
    headers={"X-Supabase-Api-Version": "2024-01-01"},
)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def rest() -> Iterator[IdeaExpansion]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        SUPABASE_URL=URL,
        SUPABASE_SERVICE_ROLE_KEY="service-role-key",
        SUPABASE_ANON_KEY="anon-key",
        SUPABASE_JWT_SECRET="super-secret-jwt-token-with-at-least-32-characters-long",
        ENCRYPTION_KEY=generate_key(),
    )
    with IdeaExpansion(settings=settings, httpx_client=httpx.Client(timeout=5)) as sdk:
        yield sdk


def test_rest_create_makes_the_supabase_auth_user_first(api: respx.MockRouter, rest: IdeaExpansion) -> None:
    auth_id = uuid.uuid4()
    admin = api.post("/auth/v1/admin/users").respond(200, json=auth_user(auth_id, "ada@example.com", "Ada"))
    patch = api.patch("/rest/v1/users").respond(200, json=[profile(auth_id, "ada@example.com", "Ada", "Europe/Paris")])

    user = rest.users.create(email=" Ada@Example.com ", name="Ada", timezone="Europe/Paris")

    assert user.id == auth_id
    sent = admin.calls.last.request
    assert json.loads(sent.content) == {
        "email": "ada@example.com",
        "email_confirm": True,
        "user_metadata": {"name": "Ada"},
    }
    assert (sent.headers["apikey"], sent.headers["authorization"]) == ("service-role-key", "Bearer service-role-key")
    assert patch.calls.last.request.url.params["id"] == f"eq.{auth_id}"
    assert json.loads(patch.calls.last.request.content) == {"name": "Ada", "timezone": "Europe/Paris"}


def test_rest_create_of_a_confirmed_address_is_a_conflict_and_writes_nothing(
    api: respx.MockRouter, rest: IdeaExpansion
) -> None:
    api.post("/auth/v1/admin/users").mock(return_value=EMAIL_EXISTS)
    holder = auth_user(uuid.uuid4(), "ada@example.com", "Ada")
    api.get("/auth/v1/admin/users").respond(200, json={"users": [holder], "aud": "authenticated"})
    with pytest.raises(ConflictError, match="already been registered") as taken:
        rest.users.create(email="ada@example.com")
    assert taken.value.code == "23505"  # as on direct Postgres
    assert [(call.request.method, call.request.url.path) for call in api.calls] == [
        ("POST", "/auth/v1/admin/users"),
        ("GET", "/auth/v1/admin/users"),
    ]


def pending_auth_user(user_id: uuid.UUID, email: str, *, full_name: str | None = None) -> dict[str, Any]:
    """How GoTrue lists an unconfirmed e-mail sign-up (email_confirmed_at is omitted while null)."""
    user = auth_user(user_id, email, None)
    for key in ("email_confirmed_at", "confirmed_at"):
        del user[key]
    user["confirmation_sent_at"] = NOW
    user["user_metadata"] = {"full_name": full_name} if full_name else {}
    return user


def test_rest_an_address_the_service_vouches_for_replaces_a_pending_sign_up(
    api: respx.MockRouter, rest: IdeaExpansion
) -> None:
    """F2 on REST: a squatter's unconfirmed sign-up holds the address (with the squatter's password,
    which Supabase Auth keeps). The service vouches for the address, so that sign-up is deleted and the
    person is created confirmed: the owner's later click has nothing left to confirm. Look-alike
    accounts the listing also returns (its filter is a substring match on the address and on the
    full_name anyone may set) are left alone."""
    email = "gh-victim@example.com"
    squatter, decoy, confirmed_other, person = (uuid.uuid4() for _ in range(4))
    api.get("/rest/v1/users").respond(200, json=[])  # no profile holds the address
    admin = api.post("/auth/v1/admin/users").mock(
        side_effect=[EMAIL_EXISTS, httpx.Response(200, json=auth_user(person, email, "victim"))]
    )
    listing = api.get("/auth/v1/admin/users").respond(
        200,
        json={
            "users": [
                pending_auth_user(decoy, "attacker@example.com", full_name=email),
                auth_user(confirmed_other, "x-gh-victim@example.com", None),
                pending_auth_user(squatter, email),
            ],
            "aud": "authenticated",
        },
    )
    removed = api.delete(url__regex=r"/auth/v1/admin/users/.+").respond(200, json={})
    api.post("/rest/v1/users").respond(201, json=[profile(person, email, "victim")])
    api.post("/rest/v1/credentials").respond(201, json=[credential(person)])

    user = rest.users.sign_in_with_github(email=email, login="victim", access_token="gho_victim")

    assert user.id == person
    assert listing.calls.last.request.url.params["filter"] == email
    assert [call.request.url.path for call in removed.calls] == [f"/auth/v1/admin/users/{squatter}"]
    assert [json.loads(call.request.content)["email_confirm"] for call in admin.calls] == [True, True]

    # users.create does the same.
    admin.side_effect = [EMAIL_EXISTS, httpx.Response(200, json=auth_user(person, email, None))]
    api.patch("/rest/v1/users").respond(200, json=[profile(person, email, None)])
    assert rest.users.create(email=email).id == person
    assert removed.call_count == 2


def test_rest_create_undoes_the_auth_user_when_the_profile_step_fails(
    api: respx.MockRouter, rest: IdeaExpansion
) -> None:
    auth_id = uuid.uuid4()
    api.post("/auth/v1/admin/users").respond(200, json=auth_user(auth_id, "ada@example.com", None))
    api.patch("/rest/v1/users").respond(200, json=[])  # no profile: the migrations are not applied
    undo = api.delete(f"/auth/v1/admin/users/{auth_id}").respond(200, json={})
    with pytest.raises(Exception, match="no profile"):
        rest.users.create(email="ada@example.com")
    assert undo.called


def test_rest_sign_in_creates_new_people_through_auth_and_merges_none(
    api: respx.MockRouter, rest: IdeaExpansion
) -> None:
    auth_id = uuid.uuid4()
    lookup = api.get("/rest/v1/users").mock(
        side_effect=[httpx.Response(200, json=[]), httpx.Response(200, json=[{"id": str(auth_id)}])]
    )
    admin = api.post("/auth/v1/admin/users").respond(200, json=auth_user(auth_id, "octo@example.com", "octocat"))
    upsert = api.post("/rest/v1/users").respond(201, json=[profile(auth_id, "octo@example.com", "octocat")])
    api.post("/rest/v1/credentials").respond(201, json=[credential(auth_id)])
    assert rest.users.sign_in_with_github(email="Octo@Example.com", login="octocat", access_token="gho_x").id == auth_id
    assert json.loads(admin.calls.last.request.content)["email_confirm"] is True
    assert upsert.calls.last.request.url.params["on_conflict"] == "email"
    # A returning user is not created again.
    rest.users.sign_in_with_github(email="octo@example.com", login="octocat", access_token="gho_y")
    assert (lookup.call_count, admin.call_count) == (2, 1)


def test_rest_the_auth_holder_of_an_address_is_found_past_any_number_of_look_alikes(
    api: respx.MockRouter, rest: IdeaExpansion
) -> None:
    """Anyone may put someone else's address into their own full_name, which GoTrue's filter matches:
    a first page full of such accounts must not hide the holder, and too many must not be guessed past."""
    email, holder = "ada@example.com", uuid.uuid4()
    decoys = [pending_auth_user(uuid.uuid4(), f"d{i}@example.com", full_name=email) for i in range(100)]
    listing = api.get("/auth/v1/admin/users").mock(
        side_effect=[
            httpx.Response(200, json={"users": decoys, "aud": "authenticated"}),
            httpx.Response(200, json={"users": [pending_auth_user(holder, email)], "aud": "authenticated"}),
        ]
    )
    backend = rest.backend
    assert isinstance(backend, RestBackend)
    assert backend.find_auth_user(email) == (holder, False)
    sent = [call.request for call in listing.calls]
    assert [r.url.params["page"] for r in sent] == ["1", "2"]
    assert sent[0].headers["authorization"] == "Bearer service-role-key"

    listing.side_effect = None
    listing.return_value = httpx.Response(200, json={"users": decoys, "aud": "authenticated"})
    with pytest.raises(ConflictError, match="more than 2000"):
        backend.find_auth_user(email)
    listing.return_value = httpx.Response(200, json={"users": [], "aud": "authenticated"})
    assert backend.find_auth_user(email) is None
    listing.return_value = httpx.Response(401, json={"code": "no_authorization", "message": "invalid key"})
    with pytest.raises(AuthenticationError):
        backend.find_auth_user(email)


def test_rest_user_clients_cannot_create_users(api: respx.MockRouter, rest: IdeaExpansion) -> None:
    user = rest.for_user(uuid.uuid4())
    with pytest.raises(PermissionDeniedError):
        user.users.create(email="ada@example.com")
    with pytest.raises(PermissionDeniedError):
        user.users.sign_in_with_github(email="ada@example.com", login="ada", access_token="gho_x")
    assert not api.calls


# -- access tokens signed with asymmetric keys -------------------------------------------------------
JWT_SECRET = "a-project-jwt-secret-that-is-long-enough-0123"


class Signer:
    """A locally generated signing key, as Supabase Auth holds one, and its public JWK."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg, self.kid = alg, kid
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwk |= {"kid": kid, "alg": alg, "use": "sig", "key_ops": ["verify"]}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, user: uuid.UUID, **claims: Any) -> str:
        body = {
            "sub": str(user),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": int(time.time()) + 60,
        } | claims
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None}, self.private, self.alg, headers={"kid": self.kid}
        )


def jwks(*signers: Signer) -> str:
    return json.dumps({"keys": [s.jwk for s in signers]})


@pytest.fixture(scope="module")
def keys() -> dict[str, Signer]:
    return {
        "ec": Signer("ES256", "ec-1"),
        "rsa": Signer("RS256", "rsa-1"),
        "ec-rotated": Signer("ES256", "ec-2"),
        "ec-impostor": Signer("ES256", "ec-1"),  # same kid, another key
    }


def direct(database_url: str, **values: str) -> IdeaExpansion:
    """A direct-Postgres client with exactly these token settings (blank ones override the environment)."""
    unset = dict.fromkeys(("SUPABASE_URL", "SUPABASE_JWKS_URL", "SUPABASE_JWKS", "SUPABASE_JWT_SECRET"), "")
    settings = Settings(_env_file=None, DATABASE_URL=database_url, **(unset | values))  # type: ignore[call-arg]
    return IdeaExpansion(settings=settings, backend="postgres")


def test_es256_and_rs256_tokens_are_verified_against_an_inline_jwks(
    database_url: str, client: IdeaExpansion, keys: dict[str, Signer]
) -> None:
    user = client.users.create(email=address("jwks"))
    with direct(database_url, SUPABASE_JWKS=jwks(keys["ec"], keys["rsa"]), SUPABASE_JWT_SECRET=JWT_SECRET) as sdk:
        for signer in (keys["ec"], keys["rsa"]):
            assert sdk.for_access_token(signer.token(user.id)).users.me().id == user.id
        legacy = jwt.encode(
            {"sub": str(user.id), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60},
            JWT_SECRET,
        )
        assert sdk.for_access_token(legacy).users.me().id == user.id  # HS256 with the JWT secret still works


def test_forged_and_unusable_tokens_are_refused(database_url: str, keys: dict[str, Signer]) -> None:
    ec_key, rsa_key = keys["ec"], keys["rsa"]
    sub = uuid.uuid4()
    ec_pem = ec_key.public_pem()
    forged = {
        "signed by another key with the same kid": keys["ec-impostor"].token(sub),
        "signed by a key not in the set": keys["ec-rotated"].token(sub),
        "expired": ec_key.token(sub, exp=int(time.time()) - 10),
        "no exp": ec_key.token(sub, exp=None),
        "no sub": ec_key.token(sub, sub=None),
        "not for authenticated users": ec_key.token(sub, aud="somebody-else"),
        "a service_role token": ec_key.token(sub, role="service_role"),
        "sub not a user id": ec_key.token(sub, sub="admin"),
        "alg none": jwt.encode(
            {"sub": str(sub), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60},
            None,
            "none",
            headers={"kid": "ec-1"},
        ),
        "HS256 keyed with the public key": _hmac_token(sub, ec_pem, kid="ec-1"),
        "HS256 keyed with the JWK": _hmac_token(sub, json.dumps(ec_key.jwk).encode(), kid="ec-1"),
        "RS256 header on the EC kid": _swap_alg(ec_key.token(sub), "RS256"),
        "ES256 header on the RSA kid": _swap_alg(rsa_key.token(sub), "ES256"),
        "no kid": jwt.encode(
            {"sub": str(sub), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60},
            ec_key.private,
            "ES256",
        ),
        "not a JWT": "not-a-jwt",
    }
    with direct(database_url, SUPABASE_JWKS=jwks(ec_key, rsa_key), SUPABASE_JWT_SECRET=JWT_SECRET) as sdk:
        for what, token in forged.items():
            with pytest.raises(AuthenticationError) as refused:
                sdk.for_access_token(token)
            assert refused.value.code == "PGRST301", what
    # Without the legacy secret (unset or empty) an HS256 token is not one this client can verify.
    empty_key = _hmac_token(sub, b"", kid="ec-1")  # SUPABASE_JWT_SECRET="" must not verify this
    with direct(database_url, SUPABASE_JWKS=jwks(ec_key)) as sdk:
        for token in (forged["HS256 keyed with the public key"], empty_key):
            with pytest.raises(AuthenticationError):
                sdk.for_access_token(token)


def _hmac_token(sub: uuid.UUID, key: bytes, *, kid: str) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(
        json.dumps(
            {"sub": str(sub), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60}
        ).encode()
    )
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def _swap_alg(token: str, alg: str) -> str:
    import base64

    header, body, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    swapped = base64.urlsafe_b64encode(json.dumps(decoded | {"alg": alg}).encode()).rstrip(b"=").decode()
    return f"{swapped}.{body}.{signature}"


def test_the_jwks_is_fetched_from_supabase_auth_cached_and_refetched_for_a_new_kid(
    database_url: str, client: IdeaExpansion, keys: dict[str, Signer]
) -> None:
    user = client.users.create(email=address("fetch"))
    with (
        respx.mock(assert_all_called=True) as api,
        direct(database_url, SUPABASE_URL=URL) as sdk,
    ):
        published = api.get(f"{URL}/auth/v1/.well-known/jwks.json").mock(
            side_effect=[
                httpx.Response(200, json=json.loads(jwks(keys["ec"]))),
                httpx.Response(200, json=json.loads(jwks(keys["ec"], keys["ec-rotated"]))),
            ]
        )
        for _ in range(3):
            assert sdk.for_access_token(keys["ec"].token(user.id)).users.me().id == user.id
        assert published.call_count == 1
        # A key rotation: the new kid is not cached yet, so the set is fetched again, once.
        assert sdk.for_access_token(keys["ec-rotated"].token(user.id)).users.me().id == user.id
        assert published.call_count == 2
        # Unknown kids do not make every request fetch the set again.
        for _ in range(5):
            with pytest.raises(AuthenticationError, match="not in the project's JWKS"):
                sdk.for_access_token(keys["rsa"].token(user.id))
        assert published.call_count == 2


def test_jwks_configuration_problems_are_clear(database_url: str, keys: dict[str, Signer]) -> None:
    token = keys["ec"].token(uuid.uuid4())
    with direct(database_url) as sdk, pytest.raises(ConfigurationError, match="SUPABASE_JWKS_URL"):
        sdk.for_access_token(token)
    with (
        direct(database_url, SUPABASE_JWKS="{not json") as sdk,
        pytest.raises(ConfigurationError, match="SUPABASE_JWKS"),
    ):
        sdk.for_access_token(token)
    with respx.mock() as api, direct(database_url, SUPABASE_JWKS_URL=f"{URL}/keys.json") as sdk:
        api.get(f"{URL}/keys.json").respond(404, json={"message": "no such path"})
        with pytest.raises(ConfigurationError, match="404"):
            sdk.for_access_token(token)


REST_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # the `rest` fixture's


def test_rest_access_tokens_are_verified_before_their_user_id_is_trusted(
    api: respx.MockRouter, rest: IdeaExpansion, keys: dict[str, Signer]
) -> None:
    """F7: the Supabase API verifies a token on every request, but `view.scope.user_id` is read before
    any request: application code that trusts it for service-role calls must not get a forged id."""
    victim = uuid.uuid4()
    api.get("/auth/v1/.well-known/jwks.json").respond(200, json=json.loads(jwks(keys["ec"])))
    claims = {"sub": str(victim), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60}
    for genuine in (jwt.encode(claims, REST_SECRET), keys["ec"].token(victim)):
        view = rest.for_access_token(genuine)
        assert (view.scope.user_id, view.scope.access_token) == (victim, genuine)
    forged = {
        "signed with the wrong key": jwt.encode(claims, "not-the-project-secret-but-long-enough-0123"),
        "expired": jwt.encode(claims | {"exp": int(time.time()) - 10}, REST_SECRET),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, REST_SECRET),
        "a key not in the JWKS": keys["ec-rotated"].token(victim),
        "same kid, another key": keys["ec-impostor"].token(victim),
        "alg none": jwt.encode(claims, None, "none"),
    }
    for what, token in forged.items():
        with pytest.raises(AuthenticationError) as refused:
            rest.for_access_token(token)
        assert refused.value.code == "PGRST301", what
    assert {call.request.url.path for call in api.calls} == {"/auth/v1/.well-known/jwks.json"}

    # Without SUPABASE_JWT_SECRET a legacy HS256 token cannot be verified here: refused, never trusted.
    settings = rest.settings.model_copy(update={"supabase_jwt_secret": None})
    with IdeaExpansion(settings=settings, httpx_client=httpx.Client(timeout=5)) as no_secret:
        with pytest.raises(AuthenticationError, match="SUPABASE_JWT_SECRET"):
            no_secret.for_access_token(jwt.encode(claims, REST_SECRET))
        assert no_secret.for_access_token(keys["ec"].token(victim)).scope.user_id == victim


def test_rest_delete_removes_the_supabase_auth_user_so_the_address_is_free_again(
    api: respx.MockRouter, rest: IdeaExpansion
) -> None:
    auth_id, profile_only = uuid.uuid4(), uuid.uuid4()
    auth_delete = api.delete(f"/auth/v1/admin/users/{auth_id}").respond(200, json={})
    profile_delete = api.delete("/rest/v1/users").respond(200, json=[])  # the auth trigger already took it
    rest.users.delete(auth_id)
    assert auth_delete.called
    assert profile_delete.calls.last.request.url.params["id"] == f"eq.{auth_id}"

    # A profile without an Auth identity (created on direct Postgres): Auth says user_not_found (404).
    api.delete(f"/auth/v1/admin/users/{profile_only}").respond(
        404, json={"code": 404, "error_code": "user_not_found", "msg": "User not found"}
    )
    api.delete("/rest/v1/users").respond(200, json=[profile(profile_only, "old@example.com", None)])
    rest.users.delete(profile_only)
    api.delete("/rest/v1/users").respond(200, json=[])
    with pytest.raises(NotFoundError):
        rest.users.delete(profile_only)  # neither an Auth user nor a profile


@over_both_clients
def test_service_lookups_by_address_never_fold_a_look_alike_onto_someone(client: IdeaExpansion) -> None:
    kate = client.users.create(email=f"kate-{uuid.uuid4().hex[:6]}@example.com")
    look_alike = "\u212a" + kate.email[1:]  # the Kelvin sign: Python lower-cases it to "k"
    assert look_alike.lower() == kate.email
    with pytest.raises(NotFoundError):
        client.users.get_by_email(look_alike)
    with pytest.raises(NotFoundError):
        client.credits.grant(look_alike, 5, "5.00", f"BMC-{uuid.uuid4().hex[:8]}")
    assert client.credits.balance(kate.id).paid_credits_remaining == 0
    assert client.users.get_by_email(f"  {kate.email.upper()} ").id == kate.id  # case and blanks still match
