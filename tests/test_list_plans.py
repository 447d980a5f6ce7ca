"""Every list the SDK offers is an index scan in the list's own order over the user's rows, with no sort,
for a user with 100,000 ideas among thousands of other users (issue 10): under RLS (as `authenticated`
with the user's claims, as PostgREST runs a request), as the service role with an explicit user filter,
and as anon for public posts.

Every list is keyset-paged, ordered by (its sort column desc, id desc): its first page is checked, and the
page after it, whose cursor's keyset must be an index condition (the scan starts at the cursor).

Each case makes the real SDK call through the real Postgres backend, which records the statement it
sends; the test EXPLAINs (ANALYZE, BUFFERS) exactly that statement as the same scope. The data set is
benchmarks/rls_listings.py's (loaded with generate_series), smaller in the tables other than ideas.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
import respx
from benchmarks.rls_listings import HEAVY, RecordingBackend, Sizes, Statement, buffers, explain, load_dataset, recorded
from psycopg import sql
from psycopg.rows import dict_row

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.backends._base import Scope
from idea_expansion.backends.postgres import set_request_context
from idea_expansion.resources._pagination import SyncPage

from .conftest import migrated_database

SIZES = Sizes(
    heavy_ideas=100_000,
    users=2_000,
    ideas_each=20,
    heavy_runs=5_000,
    runs_each=10,
    heavy_receipts=1_000,
    heavy_charges=5_000,
)
MAX_BUFFERS = 500
"""Generous: an index scan in order reads tens of buffers for 50 rows; a scan of the heavy user's rows
then a sort reads thousands."""


@dataclass(frozen=True)
class Known:
    """A value some calls need: one of the heavy user's runs."""

    execution_id: uuid.UUID


@dataclass(frozen=True)
class Case:
    call: Callable[[IdeaExpansion, Known], object]
    index: str
    """The index the list must be scanned through."""
    sort: str = "created_at"
    """The list's sort column: on a later page the cursor's keyset must bound the index scan by it."""
    rows: int = 51
    """Rows the statement returns: a page of 50 and one more, which tells that another page exists."""
    per_user: bool = True
    """The index condition must narrow the scan to the user's rows."""
    paged: bool = True
    """A later page exists (its statement, with the cursor's keyset, is checked too)."""


def _me(client: IdeaExpansion) -> IdeaExpansion:
    return client.for_user(HEAVY)


CASES = {
    # As the user: RLS narrows the rows ((select auth.uid()) = user_id); a list of the user's own rows
    # by name says `user_id = (select auth.uid())` (test_a_user_clients_first_pages_are_planned_once).
    "rls-ideas": Case(lambda c, k: _me(c).ideas.list(), "idx_ideas_user_created"),
    "rls-ideas-priority": Case(
        lambda c, k: _me(c).ideas.list(order_by="priority_score"), "idx_ideas_user_priority", sort="priority_score"
    ),
    "rls-ideas-archived": Case(lambda c, k: _me(c).ideas.list(status="archived"), "idx_ideas_user_status"),
    "rls-ideas-pending-priority": Case(
        lambda c, k: _me(c).ideas.list(status="pending", order_by="priority_score"),
        "idx_ideas_user_status_priority",
        sort="priority_score",
    ),
    "rls-executions": Case(lambda c, k: _me(c).executions.list(), "idx_executions_user_started", sort="started_at"),
    "rls-executions-failed": Case(
        lambda c, k: _me(c).executions.list(status="failed"), "idx_executions_user_status_started", sort="started_at"
    ),
    "rls-outputs": Case(lambda c, k: _me(c).outputs.list(), "idx_outputs_user_created"),
    "rls-outputs-image": Case(lambda c, k: _me(c).outputs.list(format="image"), "idx_outputs_user_format_created"),
    "rls-outputs-of-a-run": Case(
        lambda c, k: _me(c).outputs.list(execution_id=k.execution_id), "idx_outputs_execution", rows=1, paged=False
    ),
    "rls-blog-posts-own": Case(lambda c, k: _me(c).blog_posts.list(user_id=HEAVY), "idx_blog_posts_user_created"),
    # Own and public posts: no index can start with "mine or public", so the scan is in created_at order
    # over every visible post and stops at the 51st.
    "rls-blog-posts-visible": Case(lambda c, k: _me(c).blog_posts.list(), "idx_blog_posts_created", per_user=False),
    "rls-blog-posts-public": Case(
        lambda c, k: _me(c).blog_posts.list_public(), "idx_blog_posts_public", sort="published_at", per_user=False
    ),
    "rls-payment-receipts": Case(lambda c, k: _me(c).credits.history(), "idx_payment_receipts_user_created"),
    "rls-credit-charges": Case(lambda c, k: _me(c).credits.charges(), "idx_credit_charges_user_created"),
    # Not paged: at most one credential per provider (unique (user_id, provider), five providers).
    "rls-credentials": Case(
        lambda c, k: _me(c).credentials.list(), "credentials_user_id_provider_key", rows=5, paged=False
    ),
    # As the service role, for one user.
    "service-ideas": Case(lambda c, k: c.ideas.list(user_id=HEAVY), "idx_ideas_user_created"),
    "service-ideas-priority": Case(
        lambda c, k: c.ideas.list(order_by="priority_score", user_id=HEAVY),
        "idx_ideas_user_priority",
        sort="priority_score",
    ),
    "service-ideas-expanded": Case(
        lambda c, k: c.ideas.list(status="expanded", user_id=HEAVY), "idx_ideas_user_status"
    ),
    "service-ideas-archived-priority": Case(
        lambda c, k: c.ideas.list(status="archived", order_by="priority_score", user_id=HEAVY),
        "idx_ideas_user_status_priority",
        sort="priority_score",
    ),
    "service-executions": Case(
        lambda c, k: c.executions.list(user_id=HEAVY), "idx_executions_user_started", sort="started_at"
    ),
    "service-executions-partial": Case(
        lambda c, k: c.executions.list(status="partial", user_id=HEAVY),
        "idx_executions_user_status_started",
        sort="started_at",
    ),
    "service-outputs": Case(lambda c, k: c.outputs.list(user_id=HEAVY), "idx_outputs_user_created"),
    "service-outputs-thread": Case(
        lambda c, k: c.outputs.list(format="twitter_thread", user_id=HEAVY), "idx_outputs_user_format_created"
    ),
    "service-outputs-of-a-run": Case(
        lambda c, k: c.outputs.list(execution_id=k.execution_id, user_id=HEAVY),
        "idx_outputs_execution",
        rows=1,
        paged=False,
    ),
    "service-blog-posts-public": Case(
        lambda c, k: c.blog_posts.list_public(), "idx_blog_posts_public", sort="published_at", per_user=False
    ),
    "service-blog-posts": Case(lambda c, k: c.blog_posts.list(user_id=HEAVY), "idx_blog_posts_user_created"),
    "service-payment-receipts": Case(lambda c, k: c.credits.history(HEAVY), "idx_payment_receipts_user_created"),
    "service-credit-charges": Case(lambda c, k: c.credits.charges(HEAVY), "idx_credit_charges_user_created"),
    "service-credentials": Case(
        lambda c, k: c.credentials.list(user_id=HEAVY), "credentials_user_id_provider_key", rows=5, paged=False
    ),
    # As the service role, every user's ideas (its listing without user_id).
    "service-all-ideas": Case(lambda c, k: c.ideas.list(), "idx_ideas_created", per_user=False),
    "service-all-ideas-priority": Case(
        lambda c, k: c.ideas.list(order_by="priority_score"),
        "idx_ideas_priority",
        sort="priority_score",
        per_user=False,
    ),
    # As the service role, every user's runs, outputs and posts.
    "service-all-executions": Case(
        lambda c, k: c.executions.list(), "idx_executions_started", sort="started_at", per_user=False
    ),
    "service-all-outputs": Case(lambda c, k: c.outputs.list(), "idx_outputs_created", per_user=False),
    "service-all-blog-posts": Case(lambda c, k: c.blog_posts.list(), "idx_blog_posts_created", per_user=False),
    # As anon: RLS lets through public posts only.
    "anon-blog-posts-public": Case(
        lambda c, k: c.anonymous().blog_posts.list_public(),
        "idx_blog_posts_public",
        sort="published_at",
        per_user=False,
    ),
    "anon-blog-posts": Case(lambda c, k: c.anonymous().blog_posts.list(), "idx_blog_posts_created", per_user=False),
}
PLANS = [
    (name, page) for name, case in sorted(CASES.items()) for page in (("first", "next") if case.paged else ("first",))
]
"""Every list's first page, and the page after it where there is one."""


@pytest.fixture(scope="module")
def listing_db(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    url: str = migrated_database(fresh_database, project, prefix="ie_plans", seed=False)
    with psycopg.connect(url, autocommit=True) as conn:
        load_dataset(conn, SIZES)
    return url


@pytest.fixture(scope="module")
def sdk(listing_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IdeaExpansion, RecordingBackend]]:
    backend = RecordingBackend(listing_db)
    settings = Settings(_env_file=None, DATABASE_URL=listing_db)  # type: ignore[call-arg]
    storage: Path = tmp_path_factory.mktemp("plans")
    with IdeaExpansion(settings=settings, backend=backend, storage_dir=storage) as client:
        yield client, backend


@pytest.fixture(scope="module")
def known(sdk: tuple[IdeaExpansion, RecordingBackend]) -> Known:
    client, _ = sdk
    return Known(_me(client).outputs.list(limit=1).data[0].execution_id)


@pytest.fixture(scope="module")
def conn(listing_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(listing_db, autocommit=True) as connection:
        yield connection


_TYPES = ((bool, "boolean"), (int, "integer"), (str, "text"), (uuid.UUID, "uuid"), (datetime, "timestamptz"))


def _explain_generic(conn: psycopg.Connection[Any], statement: Statement) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement's generic plan: the plan a prepared statement may keep
    after its fifth run (psycopg prepares the SDK's statements from their fifth run on), chosen without
    the parameters' values (which user, which limit)."""
    text = statement.query.as_string(conn)
    for n in range(1, len(statement.params) + 1):
        text = text.replace("%s", f"${n}", 1)
    types = [next(name for kind, name in _TYPES if isinstance(p, kind)) for p in statement.params]
    # EXPLAIN EXECUTE takes no bind parameters: the values go in as literals (still a generic plan).
    values = sql.SQL(", ").join(sql.Literal(p) for p in statement.params)
    try:
        with conn.transaction(force_rollback=True):
            set_request_context(conn, statement.scope)
            conn.execute("set local plan_cache_mode = force_generic_plan")
            # A statement with no parameters (the service role's every-user page) is prepared without a list.
            signature = f" ({', '.join(types)})" if types else ""
            conn.execute(f"prepare list_plan{signature} as {text}")
            arguments = sql.SQL(" ({})").format(values) if statement.params else sql.SQL("")
            row = conn.execute(
                sql.SQL("explain (analyze, buffers, format json) execute list_plan{}").format(arguments)
            ).fetchone()
    finally:
        conn.execute("deallocate all")  # prepared statements outlive the transaction
    assert row is not None
    plan: dict[str, Any] = row[0][0]
    return plan


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def test_the_heavy_user_is_heavy(conn: psycopg.Connection[Any]) -> None:
    """The plans below are about a user with 100,000 ideas among thousands of users with a few each."""
    row = conn.execute(
        "select count(*) filter (where user_id = %s), count(distinct user_id) from public.ideas", (HEAVY,)
    ).fetchone()
    assert row == (SIZES.heavy_ideas, SIZES.users + 1)


@pytest.mark.parametrize("plan_kind", ["custom", "generic"])
@pytest.mark.parametrize(("name", "page"), PLANS)
def test_list_is_an_index_scan_in_order(
    name: str,
    page: str,
    plan_kind: str,
    sdk: tuple[IdeaExpansion, RecordingBackend],
    known: Known,
    conn: psycopg.Connection[Any],
) -> None:
    case = CASES[name]
    client, backend = sdk
    if page == "first":
        statement: Statement = recorded(backend, lambda: case.call(client, known))
    else:  # the page after the first, asked for with the cursor the first one handed out
        first = case.call(client, known)
        assert isinstance(first, SyncPage), first
        assert first.has_next_page(), "the data set must give this list a second page"
        statement = recorded(backend, first.get_next_page)
    plan = explain(conn, statement) if plan_kind == "custom" else _explain_generic(conn, statement)
    nodes = list(_nodes(plan["Plan"]))
    shape = [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in nodes]

    assert not [n for n in nodes if "Sort" in n["Node Type"]], f"a sort in {shape}"  # Incremental Sort too
    scans = [n for n in nodes if "Relation Name" in n]
    assert len(scans) == 1, shape
    scan = scans[0]
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), shape
    assert scan["Index Name"] == case.index, shape
    if case.per_user:
        assert "user_id" in scan.get("Index Cond", ""), f"the scan is not narrowed to the user's rows: {shape}"
    if page == "next":
        # The scan starts at the cursor (the keyset is an index condition), not at the newest row with
        # every row before the cursor read and filtered out.
        assert f"ROW({case.sort}, id) <" in scan.get("Index Cond", ""), f"the keyset does not bound the scan: {shape}"
    assert plan["Plan"]["Actual Rows"] == case.rows
    assert buffers(plan) <= MAX_BUFFERS, f"{buffers(plan)} buffers for {shape}"


def test_a_user_clients_first_pages_are_planned_once(
    sdk: tuple[IdeaExpansion, RecordingBackend], known: Known, listing_db: str
) -> None:
    """A user's own lists send no parameter: the user is `(select auth.uid())`, as in the policies, and a
    status or format is written in. PostgreSQL plans a prepared statement with no parameter once (its
    generic plan) and one with a parameter anew on every call, which under RLS made a short list (archived
    ideas, own blog posts, receipts) cost up to twice the service role's (benchmarks/rls_listings.py).
    Only a list narrowed by a caller's id (one run's outputs) keeps its parameter."""
    client, backend = sdk
    with psycopg.connect(listing_db, autocommit=True) as connection:
        for name, case in CASES.items():
            if not name.startswith("rls-"):
                continue
            statement = recorded(backend, partial(case.call, client, known))
            if name == "rls-outputs-of-a-run":
                assert statement.params == (known.execution_id,), statement
                continue
            assert statement.params == (), (name, statement)
            for _ in range(7):
                with connection.transaction():
                    set_request_context(connection, statement.scope)
                    connection.execute(statement.query, statement.params, prepare=True).fetchall()
            text = statement.query.as_string(connection)
            row = connection.execute(
                "select generic_plans, custom_plans from pg_prepared_statements where statement = %s", (text,)
            ).fetchone()
            assert row == (7, 0), name  # (generic plans, custom plans)


# -- the same pages through the REST backend ----------------------------------------------------------------------
# PostgREST has no row comparison: the REST backend asks for a later page with `sort=lte.v` (where the index
# scan starts) and `or=(sort.lt."v",id.lt."i")` (the rows tied at v up to the cursor's id). Its request is
# recorded with respx and turned into the statement PostgREST runs for it, which must be planned as the
# Postgres backend's is: the list's index, in order, from the cursor on.
REST_URL = "https://plans.supabase.co"
_OPERATORS = {"eq": "=", "lt": "<", "lte": "<="}
_VALUE: dict[str, Callable[[str], Any]] = {
    "id": uuid.UUID,
    "user_id": uuid.UUID,
    "execution_id": uuid.UUID,
    "created_at": datetime.fromisoformat,
    "started_at": datetime.fromisoformat,
    "published_at": datetime.fromisoformat,
    "priority_score": int,
    "is_public": lambda text: text == "true",
    "status": str,
    "format": str,
}
"""A query value as PostgREST hands it to Postgres: text the column's type reads (as a typed parameter here,
so a generic plan can be made)."""
_KEYSET_OR = re.compile(r'\((\w+)\.lt\."([^"\\]*)",id\.lt\."([0-9a-f-]{36})"\)')
_KEYSET_OR_ALONE = re.compile(r'\((\w+)\.lt\."([^"\\]*)",and\(\w+\.eq\."[^"\\]*",id\.lt\."([0-9a-f-]{36})"\)\)')
"""The keyset as one `or` (the REST backend's form before `lte` bounded it): kept to show what it cost."""


def postgrest_statement(table: str, query: dict[str, list[str]], scope: Scope) -> Statement:
    """The statement PostgREST runs for a GET of `table` with the query the SDK's listings send (eq and lte
    filters, the keyset's `or`, order, limit)."""
    where: list[str] = []
    params: list[Any] = []
    for column, values in query.items():
        if column in ("select", "order", "limit"):
            continue
        (value,) = values
        if column == "or" and (match := _KEYSET_OR.fullmatch(value)):
            sort, sort_value, row_id = match.groups()
            where.append(f'("{sort}" < %s or "id" < %s)')
            params += [_VALUE[sort](sort_value), uuid.UUID(row_id)]
        elif column == "or" and (match := _KEYSET_OR_ALONE.fullmatch(value)):
            sort, sort_value, row_id = match.groups()
            where.append(f'("{sort}" < %s or ("{sort}" = %s and "id" < %s))')
            params += [_VALUE[sort](sort_value), _VALUE[sort](sort_value), uuid.UUID(row_id)]
        elif column == "or":
            raise AssertionError(f"not a keyset the SDK sends: {value}")
        else:
            operator, _, text = value.partition(".")
            where.append(f'"{column}" {_OPERATORS[operator]} %s')
            params.append(_VALUE[column](text))
    order = ", ".join(
        f'"{column}" {direction}' for column, direction in (o.split(".") for o in query["order"][0].split(","))
    )
    text = (
        f'select * from "public"."{table}" where {" and ".join(where)} order by {order} limit {int(query["limit"][0])}'
    )
    return Statement(sql.Composed([sql.SQL(text)]), tuple(params), scope)


@pytest.fixture(scope="module")
def rest_client() -> Iterator[IdeaExpansion]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        SUPABASE_URL=REST_URL,
        SUPABASE_SERVICE_ROLE_KEY="service-role-key",
        SUPABASE_ANON_KEY="anon-key",
        SUPABASE_JWT_SECRET="super-secret-jwt-token-with-at-least-32-characters-long",
    )
    with IdeaExpansion(settings=settings, httpx_client=httpx.Client(timeout=5)) as client:
        yield client


def _answer(conn: psycopg.Connection[Any], statement: Statement) -> list[dict[str, Any]]:
    """The rows a statement returns to its scope, as PostgREST's JSON would carry them."""
    with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cursor:
        set_request_context(conn, statement.scope)
        rows = cursor.execute(statement.query, statement.params).fetchall()
    answer: list[dict[str, Any]] = json.loads(json.dumps(rows, default=str))
    return answer


@pytest.mark.parametrize("plan_kind", ["custom", "generic"])
@pytest.mark.parametrize("name", [name for name, page in PLANS if page == "next"])
def test_a_later_page_through_the_rest_backend_is_an_index_scan_in_order(
    name: str,
    plan_kind: str,
    sdk: tuple[IdeaExpansion, RecordingBackend],
    rest_client: IdeaExpansion,
    known: Known,
    conn: psycopg.Connection[Any],
) -> None:
    case = CASES[name]
    client, backend = sdk
    first_statement = recorded(backend, lambda: case.call(client, known))
    table = re.search(r'from "public"\."(\w+)"', first_statement.query.as_string(conn))
    assert table is not None
    with respx.mock(base_url=REST_URL, assert_all_called=True) as api:
        route = api.get(f"/rest/v1/{table[1]}").mock(
            side_effect=[httpx.Response(200, json=_answer(conn, first_statement)), httpx.Response(200, json=[])]
        )
        first = case.call(rest_client, known)
        assert isinstance(first, SyncPage)
        first.get_next_page()
    later = parse_qs(urlsplit(str(route.calls.last.request.url)).query)
    statement = postgrest_statement(table[1], later, first_statement.scope)
    plan = explain(conn, statement) if plan_kind == "custom" else _explain_generic(conn, statement)
    nodes = list(_nodes(plan["Plan"]))
    shape = [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in nodes]

    assert not [n for n in nodes if "Sort" in n["Node Type"]], f"a sort in {shape}"
    scans = [n for n in nodes if "Relation Name" in n]
    assert len(scans) == 1, shape
    assert scans[0]["Node Type"] in ("Index Scan", "Index Only Scan"), shape
    assert scans[0]["Index Name"] == case.index, shape
    assert f"({case.sort} <=" in scans[0].get("Index Cond", ""), f"the cursor does not bound the scan: {shape}"
    assert plan["Plan"]["Actual Rows"] == case.rows
    assert buffers(plan) <= MAX_BUFFERS, f"{buffers(plan)} buffers for {shape}"
