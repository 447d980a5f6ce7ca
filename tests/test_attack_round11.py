"""Round 11's hostile review: the async client, keyset cursors, the new migrations and the FastAPI example,
attacked as a user holding a valid account would (crafted cursors, concurrent tasks, cancelled requests,
a progress stream held open).

Each defect found has a test here that failed before its fix; the guards beside them pin what was
attacked and held (scope isolation of concurrent views, the service-only reports, published_at).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
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

from idea_expansion import (
    IdeaExpansion,
    InvalidRequestError,
    PermissionDeniedError,
    Settings,
    generate_key,
)
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion.backends._base import Scope
from idea_expansion.backends.postgres_async import AsyncPostgresBackend

from ._db import Db
from .conftest import migrated_database


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.fixture
def owner(db: Db, client: IdeaExpansion) -> uuid.UUID:
    """A user with three ideas."""
    user = db.create_user()
    me = client.for_user(user)
    for n in range(3):
        me.ideas.create(title=f"Idea {n}")
    return user


# -- crafted cursors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row_id", [5, ["a"], {"a": 1}], ids=["number", "list", "object"])
def test_a_cursor_whose_row_id_is_not_text_is_an_invalid_cursor(
    client: IdeaExpansion, owner: uuid.UUID, row_id: object
) -> None:
    """Was an AttributeError (UUID(5).replace): not an SDK error, so a service passing a caller's cursor
    through answered 500 instead of 422."""
    cursor = _cursor({"k": "created_at", "v": "2026-01-01T00:00:00+00:00", "id": row_id})
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        client.for_user(owner).ideas.list(cursor=cursor)


@pytest.mark.parametrize("order_by", ["created_at", "priority_score"])
def test_a_cursor_without_a_sort_value_is_refused_rather_than_an_empty_last_page(
    client: IdeaExpansion, owner: uuid.UUID, order_by: str
) -> None:
    """`"v": null` was taken: on direct Postgres `(col, id) < (NULL, id)` matched nothing, so the walk
    silently ended (an empty last page), while the REST backend sent `col=lte.None` and failed. No listing
    sorts by a nullable column (a public post always has published_at), so no cursor holds a null."""
    cursor = _cursor({"k": order_by, "v": None, "id": str(uuid.uuid4())})
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        client.for_user(owner).ideas.list(order_by=order_by, cursor=cursor)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-(10**30), 2**63], ids=["far-below", "past-bigint"])
def test_a_cursor_integer_beyond_bigint_is_refused_rather_than_scanning_every_row(
    client: IdeaExpansion, owner: uuid.UUID, value: int
) -> None:
    """psycopg sends an int beyond bigint as numeric, and `(priority_score, id) < (numeric, uuid)` is no
    index condition: the keyset became a Filter over an index scan from the top, so a crafted cursor made
    a listing read every row it could see (for the service client's listing, every user's ideas) and
    return none. Through PostgREST such a value is a 22003 already."""
    cursor = _cursor({"k": "priority_score", "v": value, "id": str(uuid.uuid4())})
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        client.for_user(owner).ideas.list(order_by="priority_score", cursor=cursor)
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        client.ideas.list(order_by="priority_score", cursor=cursor)


@pytest.mark.parametrize("value", ["2999-01-01T00:00:00", "2999-01-01"], ids=["no-zone", "date-only"])
def test_a_cursor_time_without_a_time_zone_is_refused(client: IdeaExpansion, owner: uuid.UUID, value: str) -> None:
    """A zone-less time was compared in the database session's time zone (direct Postgres sends it as
    `timestamp`, PostgREST casts it in its own): the page depended on the server's setting. The SDK only
    hands out times with their offset."""
    cursor = _cursor({"k": "created_at", "v": value, "id": str(uuid.uuid4())})
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        client.for_user(owner).ideas.list(cursor=cursor)


def test_the_cursors_the_sdk_hands_out_still_walk_every_row(client: IdeaExpansion, owner: uuid.UUID) -> None:
    """The tighter checks refuse no cursor the SDK hands out (a time with its offset, an integer)."""
    me = client.for_user(owner)
    for order_by in ("created_at", "priority_score"):
        pages = list(me.ideas.list(order_by=order_by, limit=1).iter_pages())  # type: ignore[arg-type]
        ids = [idea.id for page in pages for idea in page.data]
        assert len(ids) == len(set(ids)) == 3
        assert ids == [idea.id for idea in me.ideas.list(order_by=order_by).data]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("report", "key"),
    [
        ("failed", [2**63, "a@example.test", None]),
        ("execution_summary", [-(10**30), "a@example.test"]),
    ],
    ids=["past-bigint", "far-below-bigint"],
)
def test_a_report_cursor_count_beyond_bigint_is_an_invalid_cursor(
    client: IdeaExpansion, report: str, key: list[Any]
) -> None:
    """Was an APIError 42883 (no function report_...(numeric, ...)): psycopg sends a Python int beyond
    bigint as numeric, so the call matched no function; through PostgREST it is a 22003. Either way not
    the invalid cursor it is."""
    function = {"failed": "report_failed_expansions", "execution_summary": "report_execution_summary"}[report]
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        getattr(client.reports, report)(cursor=_cursor({"k": function, "v": key}))


# -- the async client ---------------------------------------------------------------------------------------------
@pytest.fixture
def async_settings(database_url: str, encryption_key: str) -> Settings:
    return Settings(_env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]


def test_an_async_listing_can_be_awaited_again_and_iterated_after_an_await(
    async_settings: Settings, owner: uuid.UUID, tmp_path: Path
) -> None:
    """The steps begun at the call were run again on a second await: the closed generator answered None,
    and `await page` / `async for` a second time raised AttributeError ('NoneType' ... 'items')."""

    async def scenario() -> tuple[int, int, int, int]:
        async with AsyncIdeaExpansion(settings=async_settings, backend="postgres", storage_dir=tmp_path) as aclient:
            listing = aclient.for_user(owner).ideas.list(limit=2)
            first = await listing
            again = await listing
            every = [idea async for idea in listing]
            both = await asyncio.gather(listing._page(), listing._page())  # concurrently, too
            return len(first.data), len(again.data), len(every), sum(len(p.data) for p in both)

    assert asyncio.run(scenario()) == (2, 2, 3, 4)


def test_an_effect_builds_the_sync_twin_in_a_worker_thread_not_on_the_event_loop(
    async_settings: Settings, owner: uuid.UUID, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`asyncio.to_thread(step.run, context.sync_context())` evaluated `sync_context()` on the event loop:
    the first effect built the twin there (a database connection and a pool opened, up to the client's
    timeout when the database is slow), and every later one took the twin's lock there."""
    threads: list[bool] = []
    original = AsyncIdeaExpansion.sync_context

    def recording(self: AsyncIdeaExpansion) -> IdeaExpansion:
        threads.append(threading.current_thread() is loop_thread)
        return original(self)

    monkeypatch.setattr(AsyncIdeaExpansion, "sync_context", recording)
    loop_thread: threading.Thread | None = None

    async def scenario() -> None:
        nonlocal loop_thread
        loop_thread = threading.current_thread()
        async with AsyncIdeaExpansion(settings=async_settings, backend="postgres", storage_dir=tmp_path) as aclient:
            me = aclient.for_user(owner)
            await me.storage.upload(f"{owner}/a.png", b"\x89PNG")
            assert await me.storage.download(f"{owner}/a.png") == b"\x89PNG"

    asyncio.run(scenario())
    assert threads == [False, False], "the sync twin was reached on the event loop's thread"


def test_concurrent_views_of_one_async_client_never_act_as_each_other(
    async_settings: Settings, db: Db, tmp_path: Path
) -> None:
    """Guard: many tasks of two users and the anonymous view, interleaved on one client (one pool, one sync
    twin): each request and each effect (storage) runs as its own view's scope."""
    users = [db.create_user(), db.create_user()]

    async def scenario() -> None:
        async with AsyncIdeaExpansion(settings=async_settings, backend="postgres", storage_dir=tmp_path) as aclient:
            views = [aclient.for_user(u) for u in users]

            async def act(n: int) -> None:
                me, user = views[n % 2], users[n % 2]
                idea = await me.ideas.create(title=f"t{n}")
                assert idea.user_id == user
                assert (await me.users.me()).id == user
                await me.storage.upload(f"{user}/{n}.png", b"x")
                other = users[(n + 1) % 2]
                with pytest.raises(PermissionDeniedError):
                    await me.storage.upload(f"{other}/{n}.png", b"x")
                assert {i.user_id for i in (await me.ideas.list(limit=1000)).data} == {user}
                with pytest.raises(PermissionDeniedError):  # the public has no grant on ideas at all
                    await aclient.anonymous().ideas.list()

            await asyncio.gather(*(act(n) for n in range(40)))

    asyncio.run(scenario())


def test_a_user_view_of_the_async_rest_client_never_reaches_supabase_auth_admin() -> None:
    """Guard: creating or deleting people is the service's (Supabase Auth's admin API, service-role key);
    a user view is refused before any request, and its files go out with the user's token, not the key."""
    user = uuid.uuid4()
    secret = "super-secret-jwt-token-with-at-least-32-characters-long"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        SUPABASE_URL="https://proj.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY="service-role-key",
        SUPABASE_ANON_KEY="anon-key",
        SUPABASE_JWT_SECRET=secret,
        ENCRYPTION_KEY=generate_key(),
    )

    async def scenario(api: respx.MockRouter) -> httpx.Request:
        upload = api.post(f"/storage/v1/object/images/{user}/a.png").respond(200, json={"Key": f"images/{user}/a.png"})
        async with httpx.AsyncClient(timeout=5) as http, AsyncIdeaExpansion(settings=settings, httpx_client=http) as c:
            me = c.for_user(user)
            with pytest.raises(PermissionDeniedError):
                await me.users.create(email="victim@example.com")
            with pytest.raises(PermissionDeniedError):
                await me.users.delete(uuid.uuid4())
            with pytest.raises(PermissionDeniedError):
                await me.users.sign_in_with_github(email="victim@example.com", login="v", access_token="gho_x")
            await me.storage.upload(f"{user}/a.png", b"x")
        request: httpx.Request = upload.calls.last.request
        return request

    with respx.mock(base_url="https://proj.supabase.co", assert_all_called=True) as api:
        sent = asyncio.run(scenario(api))
        assert len(api.calls) == 1  # the upload only: nothing reached /auth/v1
    assert sent.headers["apikey"] == "anon-key"
    claims = jwt.decode(
        sent.headers["authorization"].removeprefix("Bearer "), secret, audience="authenticated", algorithms=["HS256"]
    )
    assert (claims["sub"], claims["role"]) == (str(user), "authenticated")


def test_an_async_backend_whose_first_open_timed_out_opens_at_a_later_call(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool that failed to open was closed and kept: psycopg's pools never open again, so every later
    call raised psycopg_pool.PoolClosed (not an SDK error) until the process restarted, although the
    docstring promised that a later call tries again. The database here is slow once, at the first
    connection of the pool (its set-up outlasts the one-second timeout), then well."""
    from idea_expansion import APIConnectionError
    from idea_expansion.backends import postgres_async

    configure = postgres_async._configure
    slow_once = [True]

    async def slow_first_connection(conn: Any) -> None:
        if slow_once.pop() if slow_once else False:
            await asyncio.sleep(3)
        await configure(conn)

    monkeypatch.setattr(postgres_async, "_configure", slow_first_connection)

    async def scenario() -> list[dict[str, Any]]:
        backend = AsyncPostgresBackend(database_url, timeout=1)
        try:
            with pytest.raises(APIConnectionError, match="within 1s"):
                await backend.query("select 1 as one", None, Scope("service_role"))
            return await backend.query("select 1 as one", None, Scope("service_role"))
        finally:
            await backend.close()

    assert asyncio.run(scenario()) == [{"one": 1}]


# -- cancelled requests -----------------------------------------------------------------------------------------
_SLOW_INSERT = (
    "with made as (insert into public.ideas (user_id, title) values (%s, %s) returning id) "
    "select pg_sleep(%s) from made"
)


def _running(db: Db) -> bool:
    """Whether the slow insert is running on the server (so a cancellation meets it mid-statement)."""
    return bool(
        db.scalar(
            "select count(*) from pg_stat_activity where state = 'active' and query like 'with made as%%' "
            "and datname = current_database()"
        )
    )


def _saved(db: Db, user: uuid.UUID, title: str) -> int:
    count: int = db.scalar("select count(*) from public.ideas where user_id = %s and title = %s", (user, title))
    return count


def test_a_cancelled_request_leaves_no_transaction_and_no_role_on_its_connection(database_url: str, db: Db) -> None:
    """Guard: a task cancelled while its statement runs (once, as asyncio does) rolls back, and the pool's
    one connection comes back idle, as no one (neither the user's role nor their claims)."""
    user = db.create_user()

    async def scenario() -> tuple[str, dict[str, Any]]:
        backend = AsyncPostgresBackend(database_url, min_size=1, max_size=1)
        try:
            task = asyncio.create_task(
                backend.query(_SLOW_INSERT, (user, "cancelled", 2), Scope("authenticated", user))
            )
            for _ in range(200):
                await asyncio.sleep(0.01)
                if _running(db):
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with backend._pool.connection() as conn:
                status = psycopg.pq.TransactionStatus(conn.pgconn.transaction_status).name
                cursor = await conn.execute(
                    "select current_user as who, current_setting('request.jwt.claims', true) as claims"
                )
                row = await cursor.fetchone()
                assert row is not None
                return status, row
        finally:
            await backend.close()

    status, row = asyncio.run(scenario())
    assert status == "IDLE"
    assert row["who"] == "postgres"
    assert not row["claims"]
    assert _saved(db, user, "cancelled") == 0


# -- the new migrations -----------------------------------------------------------------------------------------
REPORT_CALLS = [
    "select * from public.report_user_summary(10, now(), 'a@b.c')",
    "select * from public.report_failed_expansions(10, 1, 'a@b.c', null)",
    "select * from public.report_payments(10, now(), gen_random_uuid())",
    "select * from public.report_payment_summary(10, 1, 'a@b.c')",
    "select * from public.report_execution_summary(10, 1, 'a@b.c')",
    "select * from public.report_user_summary()",
]


@pytest.mark.parametrize("call", REPORT_CALLS)
@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_the_paged_reports_are_the_service_roles_only(db: Db, role: str, call: str) -> None:
    """Guard: every e-mail, payment and failure of every user; refused to users and the public."""
    user = db.create_user() if role == "authenticated" else None
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.request(role, user, commit=False) as conn:
        conn.execute(call)


def test_an_owner_cannot_choose_a_publication_time_or_stamp_anothers_post(db: Db) -> None:
    """Guard: published_at orders the public listing; an owner may only make a post public (the trigger
    stamps now(), never an earlier or later time of theirs), and only their own."""
    owner, stranger = db.create_user(), db.create_user()
    with db.as_service() as conn:
        row = conn.execute(
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public) "
            "values (%s, 'T', 'private-post', 'm', 'h', false) returning id, published_at",
            (owner,),
        ).fetchone()
    assert row is not None
    post, published = row
    assert published is None
    for forged in (
        "update public.blog_posts set published_at = '9999-01-01' where id = %s",
        "update public.blog_posts set is_public = true, published_at = '9999-01-01' where id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.as_user(owner, commit=False) as conn:
            conn.execute(forged, (post,))
    with db.as_user(stranger) as conn:
        assert conn.execute("update public.blog_posts set is_public = true where id = %s", (post,)).rowcount == 0
    assert db.scalar("select published_at from public.blog_posts where id = %s", (post,)) is None
    before = db.scalar("select now()")
    with db.as_user(owner) as conn:
        conn.execute("update public.blog_posts set is_public = true where id = %s", (post,))
    stamped = db.scalar("select published_at from public.blog_posts where id = %s", (post,))
    assert stamped is not None
    assert stamped >= before


# -- the FastAPI example ----------------------------------------------------------------------------------------
fastapi = pytest.importorskip("fastapi", reason="the example service needs FastAPI")

JWT_SECRET = "an-example-project-jwt-secret-long-enough-0123"


@pytest.fixture
def example_http(
    fresh_database: Any, project: Any, encryption_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, str]]:
    """The example app on a database of this test's own (the admin below claims the oldest queued run)."""
    from examples.fastapi_app import app
    from fastapi.testclient import TestClient

    url = migrated_database(fresh_database, project, prefix="ie_attack11", seed=False)
    for name in (
        "SUPABASE_URL",
        "NEXT_PUBLIC_SUPABASE_URL",
        "SUPABASE_JWKS",
        "SUPABASE_JWKS_URL",
        "IDEA_EXPANSION_BACKEND",
        "IDEA_EXPANSION_PROVIDER",
        "ENCRYPTION_KEYS_OLD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    monkeypatch.setenv("IDEA_EXPANSION_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)
    with TestClient(app) as http:
        yield http, url


def _bearer(user: uuid.UUID, lifetime: float) -> dict[str, str]:
    claims = {"sub": str(user), "role": "authenticated", "aud": "authenticated", "exp": int(time.time() + lifetime)}
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}


def test_a_progress_stream_ends_when_its_access_token_expires(example_http: tuple[Any, str]) -> None:
    """The stream polled the database twice a second for as long as the run was not final (a queued run
    with no worker: for ever), as the token's holder long after the token expired; a user with one
    queued run could hold any number of such streams, each a query every 0.5 s on the service's pool.
    A stream now ends when the caller's token expires (and after MAX_STREAM_SECONDS at the most)."""
    http, url = example_http
    with IdeaExpansion(database_url=url) as admin:
        user = admin.users.create(email=f"s-{uuid.uuid4().hex[:8]}@example.test").id
        idea = admin.for_user(user).ideas.create(title="Held in the queue")
        run = admin.expansions.enqueue(user, idea_id=idea.id)
        headers = _bearer(user, lifetime=3)
        expires = time.time() + 3
        events: list[str] = []
        with http.stream("GET", f"/expansions/{run.id}/events", headers=headers) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                    break
            time.sleep(max(0.0, expires - time.time()) + 1.5)  # the token has expired
            assert admin.expansions.claim("attacker-test") is not None  # the run changes: queued -> running
            deadline = time.monotonic() + 20
            for line in lines:  # ends when the stream ends (or at the next event)
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                    break
                assert time.monotonic() < deadline, "the stream neither ended nor moved"
    assert events == ["queued"], f"the stream went on after the token expired: {events}"
