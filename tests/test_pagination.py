"""Pages: every listing and every unbounded report is keyset-paged, and walking the pages returns every row
exactly once, whatever the page size, the row count (past PostgREST's 1000-row cap), the ties in the sort
column, or the rows added and removed between two pages. A cursor is only good for the listing and
ordering that handed it out; the last page has none. Also the async client's walk, the REST backend's
requests for a later page, and the CLI, which shows every row (or exactly --limit).

The data live in a database of this module's own: a user with 2,500 ideas in 100 tie groups of created_at
and 101 of priority_score, and 1,100 more users with payments and runs for the reports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from typer.testing import CliRunner

from idea_expansion import IdeaExpansion, InvalidRequestError, Settings, generate_key
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion.cli import app
from idea_expansion.resources._pagination import SyncPage
from idea_expansion.types import TwitterThreadContent

from ._db import Db
from .conftest import ROOT, migrated_database, use_cli_environment

IDEAS = 2_500
REPORT_USERS = 1_100


# -- the module's database ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pages_url(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    url: str = migrated_database(fresh_database, project, prefix="ie_pages", seed=False)
    return url


@pytest.fixture(scope="module")
def pages_db(pages_url: str) -> Iterator[Db]:
    handle = Db(pages_url)
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def sdk(pages_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdeaExpansion]:
    settings = Settings(_env_file=None, DATABASE_URL=pages_url, ENCRYPTION_KEY=generate_key())  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path_factory.mktemp("pages")) as client:
        yield client


def add_ideas(db: Db, user: uuid.UUID, count: int, *, per_timestamp: int = 25) -> None:
    """`count` ideas in one statement: `per_timestamp` of them share each created_at (ties the id breaks),
    and priority_score takes 101 values."""
    with db.as_service() as conn:
        conn.execute(
            "insert into public.ideas (user_id, title, priority_score, created_at) "
            "select %s, 'Idea ' || i, i %% 101, now() - (i / %s) * interval '1 minute' "
            "from generate_series(1, %s) i",
            (user, per_timestamp, count),
        )


@pytest.fixture(scope="module")
def heavy(pages_db: Db) -> uuid.UUID:
    """A user with 2,500 ideas, never changed by a test."""
    user = pages_db.create_user()
    add_ideas(pages_db, user, IDEAS)
    return user


def ideas_in_order(db: Db, user: uuid.UUID, order_by: str) -> list[uuid.UUID]:
    """The user's ideas as the database orders them: the listing's ORDER BY, (sort desc, id desc)."""
    with db.admin() as conn:
        rows = conn.execute(
            f"select id from public.ideas where user_id = %s order by {order_by} desc, id desc",
            (user,),
        ).fetchall()
    return [r[0] for r in rows]


def walked(page: Any) -> tuple[list[uuid.UUID], list[int], list[Any]]:
    """Every id of every page from `page` on, the page sizes, and the pages."""
    pages = list(page.iter_pages())
    return [row.id for p in pages for row in p.data], [len(p.data) for p in pages], pages


# -- walking every page -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order_by", ["created_at", "priority_score"])
@pytest.mark.parametrize(
    ("limit", "sizes"), [(1000, [1000, 1000, 500]), (333, [333] * 7 + [169])], ids=["limit-1000", "limit-333"]
)
@pytest.mark.parametrize("as_whom", ["user", "service"])
def test_walking_every_page_returns_every_row_once(
    sdk: IdeaExpansion, pages_db: Db, heavy: uuid.UUID, as_whom: str, order_by: str, limit: int, sizes: list[int]
) -> None:
    if as_whom == "user":  # RLS narrows the rows
        first = sdk.for_user(heavy).ideas.list(order_by=order_by, limit=limit)  # type: ignore[arg-type]
    else:
        first = sdk.ideas.list(order_by=order_by, limit=limit, user_id=heavy)  # type: ignore[arg-type]
    ids, page_sizes, pages = walked(first)
    assert len(ids) == IDEAS
    assert len(set(ids)) == IDEAS, "a row came twice"
    assert ids == ideas_in_order(pages_db, heavy, order_by)
    assert page_sizes == sizes
    assert [p.next_cursor is not None for p in pages] == [True] * (len(sizes) - 1) + [False]
    assert [i.id for i in first] == ids  # iterating the first page walks them all too


@pytest.mark.parametrize(
    ("rows", "limit", "sizes"),
    [
        (999, 1000, [999]),
        # A full page of 1000 cannot tell that it is the last (1000 is the most the Supabase API returns,
        # so one more row is never asked for): it hands out a cursor, whose page is empty and the last.
        (1000, 1000, [1000, 0]),
        (1001, 1000, [1000, 1]),
        (1000, 999, [999, 1]),
        (3, 3, [3]),
    ],
)
def test_pages_at_the_boundaries(sdk: IdeaExpansion, pages_db: Db, rows: int, limit: int, sizes: list[int]) -> None:
    user = pages_db.create_user()
    add_ideas(pages_db, user, rows)
    ids, page_sizes, pages = walked(sdk.for_user(user).ideas.list(limit=limit))
    assert page_sizes == sizes
    assert sorted(ids) == sorted(ideas_in_order(pages_db, user, "created_at"))
    assert pages[-1].next_cursor is None


def test_the_last_page_has_no_cursor_and_no_next_page(sdk: IdeaExpansion, pages_db: Db) -> None:
    user = pages_db.create_user()
    add_ideas(pages_db, user, 3)
    first = sdk.for_user(user).ideas.list(limit=2)
    assert first.has_next_page()
    last = first.get_next_page()
    assert (len(last.data), last.next_cursor, last.has_next_page()) == (1, None, False)
    with pytest.raises(InvalidRequestError, match="last page"):
        last.get_next_page()
    assert list(last.iter_pages()) == [last]
    empty = sdk.for_user(pages_db.create_user()).ideas.list()
    assert (empty.data, empty.next_cursor) == ([], None)
    with pytest.raises(InvalidRequestError, match="last page"):
        empty.get_next_page()


def test_pages_are_stable_when_rows_change_between_pages(sdk: IdeaExpansion, pages_db: Db) -> None:
    """A page after the cursor holds exactly the rows after it: rows added in front of the cursor (newer)
    do not push rows already seen onto a later page, a row added behind it is met, and a deleted row is
    simply not met. Offset paging would have repeated rows, or skipped them."""
    user = pages_db.create_user()
    add_ideas(pages_db, user, 30, per_timestamp=3)
    view = sdk.for_user(user)
    before = ideas_in_order(pages_db, user, "created_at")
    first = view.ideas.list(limit=10)
    assert [i.id for i in first.data] == before[:10]

    newer = [view.ideas.create(title=f"new {n}").id for n in range(5)]
    with pages_db.as_service() as conn:
        row = conn.execute(
            "insert into public.ideas (user_id, title, created_at) values (%s, 'backdated', now() - interval '1 year') "
            "returning id",
            (user,),
        ).fetchone()
        assert row is not None
        backdated = row[0]
    view.ideas.delete(before[20])

    rest, _, _ = walked(first.get_next_page())
    assert [i.id for i in first.data] + rest == before[:20] + before[21:] + [backdated]
    assert not set(newer) & set(rest)


# -- cursors and limits ---------------------------------------------------------------------------------------------
def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


GARBAGE_CURSORS = {
    "not-base64": ("created_at", "garbage!"),
    "empty": ("created_at", ""),
    "not-json": ("created_at", base64.urlsafe_b64encode(b"not json").decode()),
    "a-list": ("created_at", _cursor(["created_at", "2026-01-01T00:00:00+00:00"])),
    "no-id": ("created_at", _cursor({"k": "created_at", "v": "2026-01-01T00:00:00+00:00"})),
    "not-a-time": ("created_at", _cursor({"k": "created_at", "v": "yesterday", "id": str(uuid.uuid4())})),
    "not-an-id": ("created_at", _cursor({"k": "created_at", "v": "2026-01-01T00:00:00+00:00", "id": "42"})),
    "number-as-text": ("priority_score", _cursor({"k": "priority_score", "v": "10", "id": str(uuid.uuid4())})),
    "boolean": ("priority_score", _cursor({"k": "priority_score", "v": True, "id": str(uuid.uuid4())})),
    "huge": ("created_at", "A" * 10_000),
    "not-a-string": ("created_at", 12345),
}


@pytest.mark.parametrize("case", sorted(GARBAGE_CURSORS))
def test_a_garbage_cursor_is_refused(sdk: IdeaExpansion, heavy: uuid.UUID, case: str) -> None:
    order_by, cursor = GARBAGE_CURSORS[case]
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        sdk.for_user(heavy).ideas.list(order_by=order_by, cursor=cursor)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        sdk.reports.payments(cursor=cursor)  # type: ignore[arg-type]


def test_a_cursor_of_another_ordering_or_listing_is_refused(sdk: IdeaExpansion, pages_db: Db, heavy: uuid.UUID) -> None:
    view = sdk.for_user(heavy)
    by_date = view.ideas.list(limit=1).next_cursor
    by_priority = view.ideas.list(order_by="priority_score", limit=1).next_cursor
    assert by_date is not None
    assert by_priority is not None
    with pytest.raises(InvalidRequestError, match="another ordering"):
        view.ideas.list(order_by="priority_score", cursor=by_date)
    with pytest.raises(InvalidRequestError, match="another ordering"):
        view.ideas.list(cursor=by_priority)
    with pages_db.as_service() as conn:  # two runs, so the runs' listing hands out a cursor
        conn.execute(
            "insert into public.executions (user_id, status, completed_at) "
            "select %s, 'failed', now() from generate_series(1, 2)",
            (heavy,),
        )
    by_start = view.executions.list(limit=1).next_cursor
    assert by_start is not None
    with pytest.raises(InvalidRequestError, match="another ordering"):  # ordered by started_at
        view.ideas.list(cursor=by_start)
    with pytest.raises(InvalidRequestError, match="another ordering"):
        view.executions.list(cursor=by_date)
    pages_db.create_user()  # the users' report has two rows at least
    by_report = sdk.reports.users(limit=1).next_cursor
    assert by_report is not None
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        view.ideas.list(cursor=by_report)
    with pytest.raises(InvalidRequestError, match="another listing"):
        sdk.reports.payments(cursor=by_report)
    with pytest.raises(InvalidRequestError, match="another listing"):
        sdk.reports.users(cursor=by_date)


def _paged_calls(client: IdeaExpansion, user: uuid.UUID) -> dict[str, Callable[..., Any]]:
    return {
        "ideas.list": client.ideas.list,
        "executions.list": client.executions.list,
        "outputs.list": client.outputs.list,
        "blog_posts.list": client.blog_posts.list,
        "blog_posts.list_public": client.blog_posts.list_public,
        "credits.history": lambda **kw: client.credits.history(user, **kw),
        "credits.charges": lambda **kw: client.credits.charges(user, **kw),
        "reports.users": client.reports.users,
        "reports.failed": client.reports.failed,
        "reports.payments": client.reports.payments,
        "reports.payment_summary": client.reports.payment_summary,
        "reports.execution_summary": client.reports.execution_summary,
        "reports.top_users": client.reports.top_users,
        "reports.executions": client.reports.executions,
    }


LISTINGS = [
    "ideas.list",
    "executions.list",
    "outputs.list",
    "blog_posts.list",
    "blog_posts.list_public",
    "credits.history",
    "credits.charges",
    "reports.users",
    "reports.failed",
    "reports.payments",
    "reports.payment_summary",
    "reports.execution_summary",
    "reports.top_users",
    "reports.executions",
]


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, True, 1.5, "10", None])
@pytest.mark.parametrize("listing", LISTINGS)
def test_a_limit_outside_1_to_1000_is_refused(sdk: IdeaExpansion, heavy: uuid.UUID, listing: str, limit: Any) -> None:
    with pytest.raises(InvalidRequestError, match="limit must be an integer from 1 to 1000"):
        _paged_calls(sdk, heavy)[listing](limit=limit)


def test_every_listing_takes_a_limit_of_1_and_of_1000(sdk: IdeaExpansion, heavy: uuid.UUID) -> None:
    calls = _paged_calls(sdk, heavy)
    assert sorted(calls) == sorted(LISTINGS)
    for name, call in calls.items():
        for limit in (1, 1000):
            page = call(limit=limit)
            rows = page.data if isinstance(page, SyncPage) else page
            assert len(rows) <= limit, name


def test_credentials_are_one_answer_because_the_schema_bounds_them(pages_db: Db) -> None:
    """credentials.list is not paged: a user has at most one credential per provider, and five providers."""
    with pages_db.admin() as conn:
        unique = conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint "
            "where conrelid = 'public.credentials'::regclass and contype = 'u'"
        ).fetchall()
        providers = conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint "
            "where conrelid = 'public.credentials'::regclass and conname = 'credentials_provider_check'"
        ).fetchone()
    assert ("UNIQUE (user_id, provider)",) in unique
    assert providers is not None
    assert providers[0].count("'::text") == 5, providers


# -- public posts -------------------------------------------------------------------------------------------------
def test_every_public_post_is_walked_once_and_has_a_publication_time(sdk: IdeaExpansion, pages_db: Db) -> None:
    """list_public pages by published_at. A post inserted public without one, or made public by its owner,
    is stamped (a public post without it would sort first and end the walk at the first cursor)."""
    user = pages_db.create_user()
    given = datetime(2020, 5, 1, tzinfo=UTC)
    with pages_db.as_service() as conn:
        conn.execute(  # 25 public posts in one statement: one publication time, 25 ties
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public) "
            "select %s, 'Post', 'public-' || i, 'm', 'h', true from generate_series(1, 25) i",
            (user,),
        )
        conn.execute(
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public) "
            "select %s, 'Post', 'private-' || i, 'm', 'h', false from generate_series(1, 5) i",
            (user,),
        )
        conn.execute(
            "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, published_at) "
            "values (%s, 'Post', 'dated', 'm', 'h', %s)",
            (user, given),
        )
    owner = sdk.for_user(user)
    private = [p for p in owner.blog_posts.list(user_id=user) if not p.is_public]
    assert len(private) == 5
    assert all(p.published_at is None for p in private)
    for post in private[:3]:
        assert owner.blog_posts.update(post.id, is_public=True).published_at is not None

    with pages_db.admin() as conn:
        truth = [
            r[0]
            for r in conn.execute(
                "select id from public.blog_posts where is_public order by published_at desc, id desc"
            ).fetchall()
        ]
    ids, sizes, _ = walked(sdk.anonymous().blog_posts.list_public(limit=4))
    assert ids == truth
    assert len(set(ids)) == len(ids)
    mine = {p.id for p in owner.blog_posts.list(user_id=user) if p.is_public}
    assert len(mine) == 29
    assert mine <= set(ids)
    assert sizes[-1] <= 4
    published = {p.slug: p.published_at for p in sdk.blog_posts.list(user_id=user)}
    assert published["dated"] == given  # a given publication time is kept
    assert all(published[f"public-{i}"] is not None for i in range(1, 26))


# -- reports ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_data(pages_db: Db) -> None:
    """1,100 users made in one statement (one created_at: ties), each with a verified payment of the same
    amount (ties in verified_at and in totals), 30 pending payments (no verified_at), and failed runs
    with and without an error step."""
    with pages_db.admin() as conn:
        conn.execute(
            "insert into public.users (email) select 'report-' || i || '@example.test' from generate_series(1, %s) i",
            (REPORT_USERS,),
        )
        conn.execute(
            "insert into public.payment_receipts (user_id, amount_usd, credits_purchased, bmc_reference, status) "
            "select u.id, 5, 10, 'PAGES-' || replace(u.email, '@', '.'), 'verified' "
            "from public.users u where u.email like 'report-%'"
        )
        conn.execute(
            "insert into public.payment_receipts (user_id, amount_usd, credits_purchased, bmc_reference, status, "
            "verified_at) select u.id, 7, 14, 'PENDING-' || replace(u.email, '@', '.'), 'pending', null "
            "from public.users u where u.email like 'report-%' order by u.email limit 30"
        )
        conn.execute(
            "insert into public.executions (user_id, status, error_step, completed_at) "
            "select u.id, 'failed', (array[null, 'judge', 'generate'])[1 + n % 3], now() "
            "from (select id, row_number() over (order by email) as r from public.users "
            "      where email like 'report-%') u "
            "cross join generate_series(1, 1 + (u.r % 4)::int) n where u.r <= 400"
        )
        thread = TwitterThreadContent(
            posts=["1/3 One.", "2/3 Two.", "3/3 Three."], generated_by="pages test"
        ).model_dump_json()
        conn.execute(  # an output for ten of those runs, so the top users' report has rows
            "insert into public.outputs (execution_id, user_id, format, content) "
            "select e.id, e.user_id, 'twitter_thread', %s::jsonb from public.executions e "
            "join public.users u on u.id = e.user_id where u.email like 'report-%%' order by u.email, e.id limit 10",
            (thread,),
        )


REPORTS: dict[str, tuple[str, str]] = {
    # method: (the report function, the column that names a row)
    "users": ("report_user_summary", "email"),
    "failed": ("report_failed_expansions", "email, error_step"),
    "payments": ("report_payments", "receipt_id"),
    "payment_summary": ("report_payment_summary", "email"),
    "execution_summary": ("report_execution_summary", "email"),
}


def _row_key(row: Any, columns: str) -> tuple[Any, ...]:
    return tuple(getattr(row, c.strip()) for c in columns.split(","))


@pytest.mark.parametrize("limit", [97, 1000])
@pytest.mark.parametrize("report", sorted(REPORTS))
def test_a_report_walk_returns_the_whole_report_once(
    sdk: IdeaExpansion, pages_db: Db, report_data: None, report: str, limit: int
) -> None:
    function, columns = REPORTS[report]
    with pages_db.as_service() as conn:  # the function with no arguments: every row, in the report's order
        truth = [tuple(r) for r in conn.execute(f"select {columns} from public.{function}()").fetchall()]
    first = getattr(sdk.reports, report)(limit=limit)
    pages = list(first.iter_pages())
    keys = [_row_key(row, columns) for p in pages for row in p.data]
    assert keys == truth
    assert len(set(keys)) == len(keys)
    assert [len(p.data) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    if report in ("users", "payments", "payment_summary"):
        assert len(keys) > 1000  # past what one answer of the Supabase API holds


def test_the_reports_hold_rows_past_1000_and_every_kind_of_key(pages_db: Db, report_data: None) -> None:
    """The data above are what the walks need: ties in every sort column, and NULLs where a key may be NULL."""
    assert pages_db.scalar("select count(*) from public.payment_receipts where verified_at is null") >= 30
    assert pages_db.scalar("select count(*) from public.report_failed_expansions() where error_step is null") > 1
    assert (
        pages_db.scalar(
            "select max(n) from (select count(*) n from public.report_payment_summary() group by total_spent) t"
        )
        > 1000
    )


# -- the async client ------------------------------------------------------------------------------------------------
def test_the_async_client_walks_every_page(pages_url: str, pages_db: Db, heavy: uuid.UUID, tmp_path: Path) -> None:
    async def scenario() -> tuple[list[uuid.UUID], list[int], list[uuid.UUID]]:
        settings = Settings(_env_file=None, DATABASE_URL=pages_url)  # type: ignore[call-arg]
        async with AsyncIdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client:
            view = client.for_user(heavy)
            every = [idea.id async for idea in view.ideas.list(limit=1000)]
            first = await view.ideas.list(limit=1000)
            pages = [page async for page in first.iter_pages()]
            assert pages[-1].next_cursor is None
            with pytest.raises(InvalidRequestError, match="last page"):
                await pages[-1].get_next_page()
            with pytest.raises(InvalidRequestError, match="invalid cursor"):
                view.ideas.list(cursor="garbage")  # refused at the call, as on the sync client
            by_priority = [i.id async for i in client.ideas.list(order_by="priority_score", limit=333, user_id=heavy)]
            return every, [len(p.data) for p in pages], by_priority

    every, sizes, by_priority = asyncio.run(scenario())
    assert every == ideas_in_order(pages_db, heavy, "created_at")
    assert sizes == [1000, 1000, 500]
    assert by_priority == ideas_in_order(pages_db, heavy, "priority_score")


# -- the REST backend -------------------------------------------------------------------------------------------------
REST_URL = "https://pages.supabase.co"
REST_USER = uuid.UUID("6e8c61d4-e913-42f4-adb5-e85d2dbe176a")


def _idea_row(n: int, created_at: str) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=1000 - n)),
        "user_id": str(REST_USER),
        "title": f"Idea {n}",
        "description": None,
        "bullets": [],
        "external_links": [],
        "status": "pending",
        "priority_score": 0,
        "last_evaluated_at": None,
        "times_evaluated": 0,
        "created_at": created_at,
        "updated_at": created_at,
    }


@pytest.fixture
def rest_client() -> Iterator[IdeaExpansion]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        SUPABASE_URL=REST_URL,
        SUPABASE_SERVICE_ROLE_KEY="service-role-key",
        SUPABASE_ANON_KEY="anon-key",
        SUPABASE_JWT_SECRET="super-secret-jwt-token-with-at-least-32-characters-long",
        ENCRYPTION_KEY=generate_key(),
    )
    with IdeaExpansion(settings=settings, httpx_client=httpx.Client(timeout=5)) as client:
        yield client


def _query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


def test_a_rest_walk_asks_the_next_page_after_the_cursor(rest_client: IdeaExpansion) -> None:
    now = datetime(2026, 11, 26, 4, 48, 54, tzinfo=UTC)
    stamps = [(now - timedelta(minutes=n)).isoformat() for n in (0, 1, 1)]  # the second and third tie
    rows = [_idea_row(n, stamp) for n, stamp in enumerate(stamps)]
    with respx.mock(base_url=REST_URL, assert_all_called=True) as api:
        route = api.get("/rest/v1/ideas").mock(
            side_effect=[httpx.Response(200, json=rows), httpx.Response(200, json=rows[2:])]
        )
        walked_ids = [str(i.id) for i in rest_client.for_user(REST_USER).ideas.list(limit=2)]
    assert walked_ids == [r["id"] for r in rows]
    first, second = (_query(call.request) for call in route.calls)
    assert first == {"select": ["*"], "order": ["created_at.desc,id.desc"], "limit": ["3"]}
    last_seen = rows[1]
    assert second == {
        "select": ["*"],
        "created_at": [f"lte.{last_seen['created_at']}"],
        "or": [f'(created_at.lt."{last_seen["created_at"]}",id.lt."{last_seen["id"]}")'],
        "order": ["created_at.desc,id.desc"],
        "limit": ["3"],
    }


def test_a_rest_report_walk_sends_the_last_rows_key(rest_client: IdeaExpansion) -> None:
    def receipt(n: int, verified_at: str | None) -> dict[str, Any]:
        return {
            "email": f"payer-{n}@example.test",
            "amount_usd": 5,
            "credits_purchased": 10,
            "bmc_reference": f"REF-{n}",
            "status": "verified" if verified_at else "pending",
            "verified_at": verified_at,
            "receipt_id": str(uuid.UUID(int=100 - n)),
        }

    rows = [receipt(0, "2026-11-26T04:48:54+00:00"), receipt(1, None), receipt(2, None)]
    with respx.mock(base_url=REST_URL, assert_all_called=True) as api:
        route = api.post("/rest/v1/rpc/report_payments").mock(
            side_effect=[httpx.Response(200, json=rows), httpx.Response(200, json=rows[2:])]
        )
        walked_ids = [str(r.receipt_id) for r in rest_client.reports.payments(limit=2)]
    assert walked_ids == [r["receipt_id"] for r in rows]
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first == {"p_limit": 3}
    # The last row of the first page had no verified_at: the cursor says so (NULLs sort last).
    assert second == {"p_limit": 3, "p_after_verified_at": None, "p_after_receipt_id": rows[1]["receipt_id"]}


# -- the CLI ---------------------------------------------------------------------------------------------------------
def test_the_cli_shows_every_row_or_exactly_the_limit(
    pages_url: str, pages_db: Db, heavy: uuid.UUID, report_data: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=ROOT)
    email = pages_db.scalar("select email from public.users where id = %s", (heavy,))

    def shown(*args: str) -> list[dict[str, Any]]:
        result = CliRunner().invoke(app, [*args, "--db-url", pages_url, "--json"])
        assert result.exit_code == 0, result.output
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    assert len(shown("ideas", "list", "-u", email)) == IDEAS
    receipts = pages_db.scalar("select count(*) from public.payment_receipts")
    assert receipts > 1000
    assert len(shown("report", "payments")) == receipts
    assert len(shown("report", "users")) == pages_db.scalar("select count(*) from public.users")
    assert len(shown("report", "top-users", "--limit", "3")) == 3
    assert len(shown("report", "executions", "--limit", "7")) == 7
