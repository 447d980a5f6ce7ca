"""Every list the SDK offers is an index scan in the list's own order over the user's rows, with no sort,
for a user with 100,000 ideas among thousands of other users (issue 10): under RLS (as `authenticated`
with the user's claims, as PostgREST runs a request), as the service role with an explicit user filter,
and as anon for public posts.

Each case makes the real SDK call through the real Postgres backend, which records the statement it
sends; the test EXPLAINs (ANALYZE, BUFFERS) exactly that statement as the same scope. The data set is
benchmarks/rls_listings.py's (loaded with generate_series), smaller in the tables other than ideas.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from benchmarks.rls_listings import HEAVY, RecordingBackend, Sizes, Statement, buffers, explain, load_dataset, recorded
from psycopg import sql

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.backends.postgres import set_request_context

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
    """Values some calls need: one of the heavy user's runs, and the cursors of second pages."""

    execution_id: uuid.UUID
    created_cursor: str
    priority_cursor: str


@dataclass(frozen=True)
class Case:
    call: Callable[[IdeaExpansion, Known], object]
    index: str
    """The index the list must be scanned through."""
    rows: int = 50
    per_user: bool = True
    """The index condition must narrow the scan to the user's rows."""


def _me(client: IdeaExpansion) -> IdeaExpansion:
    return client.for_user(HEAVY)


CASES = {
    # As the user: RLS narrows the rows ((select auth.uid()) = user_id), the SDK sends no user filter.
    "rls-ideas": Case(lambda c, k: _me(c).ideas.list(), "idx_ideas_user_created"),
    "rls-ideas-page-2": Case(lambda c, k: _me(c).ideas.page(cursor=k.created_cursor), "idx_ideas_user_created"),
    "rls-ideas-offset": Case(lambda c, k: _me(c).ideas.list(offset=200), "idx_ideas_user_created"),
    "rls-ideas-priority": Case(lambda c, k: _me(c).ideas.list(order_by="priority_score"), "idx_ideas_user_priority"),
    "rls-ideas-priority-page-2": Case(
        lambda c, k: _me(c).ideas.page(cursor=k.priority_cursor, order_by="priority_score"), "idx_ideas_user_priority"
    ),
    "rls-ideas-archived": Case(lambda c, k: _me(c).ideas.list(status="archived"), "idx_ideas_user_status"),
    "rls-ideas-pending-priority": Case(
        lambda c, k: _me(c).ideas.list(status="pending", order_by="priority_score"), "idx_ideas_user_status_priority"
    ),
    "rls-executions": Case(lambda c, k: _me(c).executions.list(), "idx_executions_user_started"),
    "rls-executions-failed": Case(
        lambda c, k: _me(c).executions.list(status="failed"), "idx_executions_user_status_started"
    ),
    "rls-outputs": Case(lambda c, k: _me(c).outputs.list(), "idx_outputs_user_created"),
    "rls-outputs-image": Case(lambda c, k: _me(c).outputs.list(format="image"), "idx_outputs_user_format_created"),
    "rls-outputs-of-a-run": Case(
        lambda c, k: _me(c).outputs.list(execution_id=k.execution_id), "idx_outputs_execution", rows=1
    ),
    "rls-blog-posts-own": Case(lambda c, k: _me(c).blog_posts.list(user_id=HEAVY), "idx_blog_posts_user_created"),
    # Own and public posts: no index can start with "mine or public", so the scan is in created_at order
    # over every visible post and stops at the 50th.
    "rls-blog-posts-visible": Case(lambda c, k: _me(c).blog_posts.list(), "idx_blog_posts_created", per_user=False),
    "rls-blog-posts-public": Case(
        lambda c, k: _me(c).blog_posts.list_public(), "idx_blog_posts_public", per_user=False
    ),
    "rls-payment-receipts": Case(
        lambda c, k: _me(c).credits.history(), "idx_payment_receipts_user_created", rows=SIZES.heavy_receipts
    ),
    "rls-credit-charges": Case(lambda c, k: _me(c).credits.charges(), "idx_credit_charges_user_created", rows=100),
    "rls-credentials": Case(lambda c, k: _me(c).credentials.list(), "credentials_user_id_provider_key", rows=5),
    # As the service role, for one user.
    "service-ideas": Case(lambda c, k: c.ideas.list(user_id=HEAVY), "idx_ideas_user_created"),
    "service-ideas-priority": Case(
        lambda c, k: c.ideas.list(order_by="priority_score", user_id=HEAVY), "idx_ideas_user_priority"
    ),
    "service-ideas-expanded": Case(
        lambda c, k: c.ideas.list(status="expanded", user_id=HEAVY), "idx_ideas_user_status"
    ),
    "service-ideas-archived-priority": Case(
        lambda c, k: c.ideas.list(status="archived", order_by="priority_score", user_id=HEAVY),
        "idx_ideas_user_status_priority",
    ),
    "service-executions": Case(lambda c, k: c.executions.list(user_id=HEAVY), "idx_executions_user_started"),
    "service-executions-partial": Case(
        lambda c, k: c.executions.list(status="partial", user_id=HEAVY), "idx_executions_user_status_started"
    ),
    "service-outputs": Case(lambda c, k: c.outputs.list(user_id=HEAVY), "idx_outputs_user_created"),
    "service-outputs-thread": Case(
        lambda c, k: c.outputs.list(format="twitter_thread", user_id=HEAVY), "idx_outputs_user_format_created"
    ),
    "service-outputs-of-a-run": Case(
        lambda c, k: c.outputs.list(execution_id=k.execution_id, user_id=HEAVY), "idx_outputs_execution", rows=1
    ),
    "service-blog-posts-public": Case(lambda c, k: c.blog_posts.list_public(), "idx_blog_posts_public", per_user=False),
    "service-blog-posts": Case(lambda c, k: c.blog_posts.list(user_id=HEAVY), "idx_blog_posts_user_created"),
    "service-payment-receipts": Case(
        lambda c, k: c.credits.history(HEAVY), "idx_payment_receipts_user_created", rows=SIZES.heavy_receipts
    ),
    "service-credit-charges": Case(lambda c, k: c.credits.charges(HEAVY), "idx_credit_charges_user_created", rows=100),
    "service-credentials": Case(
        lambda c, k: c.credentials.list(user_id=HEAVY), "credentials_user_id_provider_key", rows=5
    ),
    # As the service role, every user's ideas (its listing without user_id).
    "service-all-ideas": Case(lambda c, k: c.ideas.list(), "idx_ideas_created", per_user=False),
    "service-all-ideas-priority": Case(
        lambda c, k: c.ideas.list(order_by="priority_score"), "idx_ideas_priority", per_user=False
    ),
    # As the service role, every user's runs, outputs and posts.
    "service-all-executions": Case(lambda c, k: c.executions.list(), "idx_executions_started", per_user=False),
    "service-all-outputs": Case(lambda c, k: c.outputs.list(), "idx_outputs_created", per_user=False),
    "service-all-blog-posts": Case(lambda c, k: c.blog_posts.list(), "idx_blog_posts_created", per_user=False),
    # As anon: RLS lets through public posts only.
    "anon-blog-posts-public": Case(
        lambda c, k: c.anonymous().blog_posts.list_public(), "idx_blog_posts_public", per_user=False
    ),
    "anon-blog-posts": Case(lambda c, k: c.anonymous().blog_posts.list(), "idx_blog_posts_created", per_user=False),
}


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
    me = _me(client)
    run = next(o.execution_id for o in me.outputs.list(limit=1))
    created, priority = me.ideas.page(), me.ideas.page(order_by="priority_score")
    assert created.next_cursor is not None
    assert priority.next_cursor is not None
    return Known(run, created.next_cursor, priority.next_cursor)


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
@pytest.mark.parametrize("name", sorted(CASES))
def test_list_is_an_index_scan_in_order(
    name: str,
    plan_kind: str,
    sdk: tuple[IdeaExpansion, RecordingBackend],
    known: Known,
    conn: psycopg.Connection[Any],
) -> None:
    case = CASES[name]
    client, backend = sdk
    statement: Statement = recorded(backend, lambda: case.call(client, known))
    plan = explain(conn, statement) if plan_kind == "custom" else _explain_generic(conn, statement)
    nodes = list(_nodes(plan["Plan"]))
    shape = [(n["Node Type"], n.get("Index Name"), n.get("Index Cond")) for n in nodes]

    assert not [n for n in nodes if "Sort" in n["Node Type"]], f"a sort in {shape}"
    scans = [n for n in nodes if "Relation Name" in n]
    assert len(scans) == 1, shape
    scan = scans[0]
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), shape
    assert scan["Index Name"] == case.index, shape
    if case.per_user:
        assert "user_id" in scan.get("Index Cond", ""), f"the scan is not narrowed to the user's rows: {shape}"
    assert plan["Plan"]["Actual Rows"] == case.rows
    assert buffers(plan) <= MAX_BUFFERS, f"{buffers(plan)} buffers for {shape}"
