"""RLS listings against the service role: "my 50 newest" for a user with 100,000 rows, and for a typical
user among 1,000,000 ideas across 10,000 users.

Each list is the SDK's own request (the statement its Postgres backend sends, recorded from a real call):
  - ours: as `authenticated` with the user's JWT claims, RLS narrowing the rows (`client.for_user(u)`);
  - baseline: the same list as the service role with an explicit user filter (`client.xxx.list(user_id=u)`),
    the fastest the database can answer it (or, for public posts, the same query as the service role).
Figures are the median statement time over many runs (set role + claims, then the timed statement, in one
transaction, as PostgREST runs a request) and the shared buffers the statement touches (EXPLAIN ANALYZE
BUFFERS). For the 100k user the buffers before the list-indexes migrations are reported too: the data set
is loaded first, measured, then those migrations (and every later one) are applied.

The data set is loaded with set-based SQL (generate_series), never the SDK; `load_dataset` is also the
data set of tests/test_list_plans.py.

    .venv/bin/python benchmarks/rls_listings.py [--quick] [--db-url URL]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from tempfile import mkdtemp
from typing import Any, Literal

import psycopg
from psycopg import sql

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.backends._base import Request, Scope
from idea_expansion.backends.postgres import PostgresBackend, compile_request, set_request_context
from idea_expansion.local import embedded_database_url, find_project, reset
from idea_expansion.local.migrations import migrate
from idea_expansion.local.project import SupabaseProject
from idea_expansion.types import (
    BlogPostContent,
    BlogSection,
    GitHubRepoContent,
    ImageContent,
    OutputContent,
    RepoFile,
    StoredImage,
    TwitterThreadContent,
)

try:  # run from benchmarks/ (this script, or run.py's harness)
    from _report import Result, create_database, drop_database, print_table
except ImportError:  # imported as benchmarks.rls_listings (tests/test_list_plans.py)
    from benchmarks._report import Result, create_database, drop_database, print_table

ROOT = Path(__file__).resolve().parent.parent
LIST_INDEXES = "20260101002200"
"""The first list-indexes migration (20260101002400_keyset_list_indexes.sql follows it): the 'before'
figures are those of the migrations older than it."""
GOAL: tuple[Literal["<="], float] = ("<=", 1.2)


# -- the data set -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """How many rows: user 0 is the heavy user, users 1..`users` each have the `*_each` counts."""

    heavy_ideas: int
    users: int
    ideas_each: int
    heavy_runs: int
    runs_each: int
    heavy_receipts: int = 1_000
    heavy_charges: int = 10_000


FULL = Sizes(heavy_ideas=100_000, users=10_000, ideas_each=100, heavy_runs=100_000, runs_each=10)
QUICK = Sizes(heavy_ideas=10_000, users=1_000, ideas_each=20, heavy_runs=5_000, runs_each=5, heavy_charges=2_000)


def user_id(n: int) -> uuid.UUID:
    """User n of the data set (0 is the heavy user): the ids the SQL below generates."""
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012x}")


HEAVY = user_id(0)

# Every owner, with how many rows of a kind it gets; rows are spread over the same year for every owner
# (the heavy user's rows interleave with everyone else's, as they would in a shared database).
_ROWS = """
  from (select ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid as user_id, g,
               case when g = 0 then %(heavy)s::int else %(each)s::int end as n
          from generate_series(0, %(users)s::int) g) o
  cross join lateral generate_series(1, o.n) i
  cross join lateral (select now() - make_interval(secs => 31536000.0 * (i - (o.g %% 997) / 997.0) / o.n)) t(ts)
"""

_LOAD = {
    "users": """
        insert into public.users (id, email, created_at)
        select ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'list-user-' || g || '@example.test',
               now() - interval '2 years'
          from generate_series(0, %(users)s::int) g""",
    "ideas": """
        insert into public.ideas (user_id, title, status, priority_score, created_at, updated_at)
        select o.user_id, 'Idea ' || i,
               case when i %% 20 = 0 then 'archived' when i %% 3 = 0 then 'expanded' else 'pending' end,
               (i * 37 + o.g) %% 101, ts, ts""",
    "executions": """
        insert into public.executions (user_id, status, format_chosen, current_stage, tokens_used, started_at,
                                       completed_at, duration_seconds)
        select o.user_id,
               case when i %% 10 = 0 then 'failed' when i %% 20 = 1 then 'partial' else 'completed' end,
               (array['blog_post', 'blog_post', 'twitter_thread', 'image'])[1 + i %% 4], 'done', 100,
               ts, ts + interval '20 seconds', 20""",
    "payment_receipts": """
        insert into public.payment_receipts (user_id, amount_usd, credits_purchased, bmc_reference, created_at,
                                             verified_at)
        select o.user_id, 5, 10, 'LIST-' || o.g || '-' || i, ts, ts""",
    "credit_charges": """
        insert into public.credit_charges (user_id, idempotency_key, credit_type, status, created_at)
        select o.user_id, gen_random_uuid(), 'paid', 'captured', ts""",
}

_GENERATED_BY = "benchmark data set"
_SAMPLE_CONTENT: dict[str, OutputContent] = {
    "blog_post": BlogPostContent(
        title="Post",
        slug="post",
        sections=[BlogSection(heading="Why", paragraphs=["A short paragraph."])],
        markdown="# Post\n\n## Why\n\nA short paragraph.",
        html="<h1>Post</h1>\n<h2>Why</h2>\n<p>A short paragraph.</p>",
        meta_description="A short post.",
        tags=["lists"],
        word_count=3,
        reading_time_minutes=1,
        social_post="A short post.",
        generated_by=_GENERATED_BY,
    ),
    "twitter_thread": TwitterThreadContent(posts=["1/3 One.", "2/3 Two.", "3/3 Three."], generated_by=_GENERATED_BY),
    "github_repo": GitHubRepoContent(
        repo_name="lists",
        description="A small repository.",
        files=[RepoFile(path="README.md", content="# lists\n"), RepoFile(path="main.py", content="print('lists')\n")],
        topics=["lists"],
        run_instructions="python main.py",
        generated_by=_GENERATED_BY,
    ),
    "image": ImageContent(
        prompt="A title card",
        caption="A title card.",
        headline="Lists",
        image=StoredImage(
            storage_path="lists/image.png",
            url="https://example.test/storage/v1/object/public/images/lists/image.png",
            width=1200,
            height=630,
            mime_type="image/png",
        ),
        generated_by=_GENERATED_BY,
    ),
}
"""One valid content per format (the SDK validates every output it lists), small like a short run's."""

_DERIVED = (
    # An output for every run that did not fail, a post for every blog_post output (4 in 5 public).
    """
    insert into public.outputs (execution_id, user_id, format, content, created_at)
    select e.id, e.user_id, e.format_chosen, c.content, e.completed_at
      from public.executions e
      join (values ('blog_post', %(blog_post)s::jsonb), ('twitter_thread', %(twitter_thread)s::jsonb),
                   ('github_repo', %(github_repo)s::jsonb), ('image', %(image)s::jsonb)) c(format, content)
        on c.format = e.format_chosen
     where e.status <> 'failed'""",
    """
    insert into public.blog_posts (output_id, user_id, title, slug, markdown_content, html_content, is_public,
                                   published_at, created_at, updated_at)
    select o.id, o.user_id, 'Post', 'post-' || row_number() over (partition by o.user_id order by o.created_at),
           '# Post', '<h1>Post</h1>', p.public, case when p.public then o.created_at end, o.created_at, o.created_at
      from public.outputs o cross join lateral (select hashtext(o.id::text) %% 5 <> 0) p(public)
     where o.format = 'blog_post'""",
    """
    insert into public.credentials (user_id, provider, encrypted_value)
    select u.id, p.provider, 'not-a-secret'
      from public.users u
     cross join unnest(array['openai', 'anthropic', 'github', 'twitter', 'replicate']) p(provider)
     where u.email like 'list-user-%%' and (p.provider = 'openai' or u.id = %(heavy_user)s)""",
)


def load_dataset(conn: psycopg.Connection[Any], sizes: Sizes, *, vacuum: bool = False) -> None:
    """Fill a freshly migrated database (superuser, autocommit connection) in one transaction.

    Triggers and foreign-key checks are skipped during the load (session_replication_role = replica):
    the rows are consistent by construction, and a million per-row checks would take minutes."""
    counts = {
        "ideas": (sizes.heavy_ideas, sizes.ideas_each),
        "executions": (sizes.heavy_runs, sizes.runs_each),
        "payment_receipts": (sizes.heavy_receipts, 1),
        "credit_charges": (sizes.heavy_charges, 3),
    }
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")
        conn.execute(_LOAD["users"], {"users": sizes.users})
        for table, (heavy, each) in counts.items():
            conn.execute(_LOAD[table] + _ROWS, {"heavy": heavy, "each": each, "users": sizes.users})
        contents = {name: content.model_dump_json() for name, content in _SAMPLE_CONTENT.items()}
        for statement in _DERIVED:
            conn.execute(statement, {"heavy_user": HEAVY, **contents})
    conn.execute("vacuum (analyze)" if vacuum else "analyze")


# -- the SDK's statements --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    """One statement exactly as the SDK's Postgres backend sends it, and the scope it runs as."""

    query: sql.Composed
    params: tuple[Any, ...]
    scope: Scope


class RecordingBackend(PostgresBackend):
    """The real backend, remembering every table request's statement (it still runs it)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, min_size=1, max_size=2)
        self.sent: list[Statement] = []

    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        query, params = compile_request(request, scope)
        self.sent.append(Statement(query, tuple(params), scope))
        return super().execute(request, scope)


def recorded(backend: RecordingBackend, call: Callable[[], object]) -> Statement:
    """The one statement an SDK list call sends."""
    backend.sent.clear()
    call()
    if len(backend.sent) != 1:
        raise RuntimeError(f"expected one statement, the call sent {len(backend.sent)}")
    return backend.sent[0]


def explain(conn: psycopg.Connection[Any], statement: Statement) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the statement, run as its scope, in a rolled-back request."""
    with conn.transaction(force_rollback=True):
        set_request_context(conn, statement.scope)
        row = conn.execute(
            sql.SQL("explain (analyze, buffers, format json) ") + statement.query, statement.params
        ).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]
    return plan


def buffers(plan: dict[str, Any]) -> int:
    """Shared buffers the statement touched (hits and reads; planning not included)."""
    top = plan["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def _timed(conn: psycopg.Connection[Any], statement: Statement) -> float:
    """Seconds the statement takes inside a request transaction (role and claims set first, untimed)."""
    with conn.transaction():
        set_request_context(conn, statement.scope)
        started = time.perf_counter()
        conn.execute(statement.query, statement.params).fetchall()
        return time.perf_counter() - started


# -- the listings ---------------------------------------------------------------------------------------------
Call = Callable[[IdeaExpansion, uuid.UUID], object]


@dataclass(frozen=True)
class Listing:
    """A list the SDK offers: `ours` runs under RLS (as the user, or anon), `baseline` as the service role."""

    name: str
    ours: Call
    baseline: Call | None
    baseline_sql: str = ""
    """When the service role cannot ask for the same rows through the SDK: the SQL it would send, in the
    SDK's form (one parameter, the user id; the order ends with the id tie-breaker, and the limit is the
    page's 50 and one more, written in as the SDK writes it)."""


LISTINGS = (
    Listing("ideas, newest 50", lambda c, u: c.for_user(u).ideas.list(), lambda c, u: c.ideas.list(user_id=u)),
    Listing(
        "ideas, top priority 50",
        lambda c, u: c.for_user(u).ideas.list(order_by="priority_score"),
        lambda c, u: c.ideas.list(order_by="priority_score", user_id=u),
    ),
    Listing(
        "ideas, archived, newest 50",
        lambda c, u: c.for_user(u).ideas.list(status="archived"),
        lambda c, u: c.ideas.list(status="archived", user_id=u),
    ),
    Listing(
        "executions, newest 50",
        lambda c, u: c.for_user(u).executions.list(),
        lambda c, u: c.executions.list(user_id=u),
    ),
    Listing("outputs, newest 50", lambda c, u: c.for_user(u).outputs.list(), lambda c, u: c.outputs.list(user_id=u)),
    Listing(
        "blog posts, own, newest 50",
        lambda c, u: c.for_user(u).blog_posts.list(user_id=u),
        lambda c, u: c.blog_posts.list(user_id=u),
    ),
    Listing(
        "blog posts, own and public, newest 50",
        lambda c, u: c.for_user(u).blog_posts.list(),
        None,
        # What the policy adds, written out: the service role's fastest way to the same rows.
        'select * from "public"."blog_posts" where ("user_id" = %s or "is_public") '
        'order by "created_at" desc, "id" desc limit 51',
    ),
    Listing(
        "blog posts, public, as anon, newest 50",
        lambda c, u: c.anonymous().blog_posts.list_public(),
        lambda c, u: c.blog_posts.list_public(),
    ),
    Listing(
        "payment receipts, newest 50",
        lambda c, u: c.for_user(u).credits.history(),
        lambda c, u: c.credits.history(u),
    ),
)


@dataclass
class State:
    admin_url: str
    name: str
    url: str
    iterations: int
    conn: psycopg.Connection[Any]
    """Setup, EXPLAIN, and the runs as the user (or anon)."""
    service: psycopg.Connection[Any]
    """The service role's runs. A connection of its own: when ours and the baseline are the same SQL
    text (own posts, receipts), one connection would share one prepared statement, which Postgres
    re-plans at every switch of role (its plan depends on RLS), and the figure would measure that."""
    storage: Path
    # (user label, listing name) -> (ours, baseline)
    statements: dict[tuple[str, str], tuple[Statement, Statement]] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    """The heavy user's RLS buffers per listing before the list-indexes migration."""


def _users(sizes: Sizes) -> dict[str, uuid.UUID]:
    """The two users measured, by label: the heavy one, and a typical one of the many."""
    total = sizes.heavy_ideas + sizes.users * sizes.ideas_each
    return {
        f"user with {sizes.heavy_ideas:,} ideas": HEAVY,
        f"{sizes.users:,} users, {total:,} ideas": user_id(1),
    }


def _project_before(root: Path) -> SupabaseProject:
    """The project's migrations older than the list-indexes one (copied under `root`)."""
    project = find_project(ROOT / "supabase")
    before = SupabaseProject(root / "supabase")
    before.migrations_dir.mkdir(parents=True)
    for migration in project.migrations():
        if migration.version < LIST_INDEXES:
            shutil.copy(migration.path, before.migrations_dir / migration.path.name)
    return before


def setup(admin_url: str, quick: bool) -> State:
    sizes = QUICK if quick else FULL
    name, url = create_database(admin_url)
    storage = Path(mkdtemp(prefix="ie-bench-"))
    conn = psycopg.connect(url, autocommit=True)
    state = State(admin_url, name, url, 40 if quick else 200, conn, psycopg.connect(url, autocommit=True), storage)
    try:
        reset(conn, _project_before(storage), seed=False)
        load_dataset(conn, sizes, vacuum=True)
        backend = RecordingBackend(url)
        settings = Settings(_env_file=None, DATABASE_URL=url)  # type: ignore[call-arg]
        with IdeaExpansion(settings=settings, backend=backend, storage_dir=storage / "files") as client:
            for label, user in _users(sizes).items():
                for listing in LISTINGS:
                    ours = recorded(backend, partial(listing.ours, client, user))
                    if listing.baseline is not None:
                        baseline = recorded(backend, partial(listing.baseline, client, user))
                    else:
                        baseline = Statement(sql.Composed([sql.SQL(listing.baseline_sql)]), (user,), client.scope)
                    state.statements[(label, listing.name)] = (ours, baseline)
        heavy = next(iter(_users(sizes)))
        for listing in LISTINGS:
            state.before[listing.name] = buffers(explain(conn, state.statements[(heavy, listing.name)][0]))
        migrate(conn, find_project(ROOT / "supabase"))
        # Settle before timing: fresh statistics, and the index builds' dirty pages written out, so the
        # checkpointer does not compete with the first listings measured.
        conn.execute("vacuum (analyze)")
        conn.execute("checkpoint")
    except BaseException:
        teardown(state)
        raise
    return state


def measure(state: State) -> list[Result]:
    results: list[Result] = []
    heavy = next(iter(state.statements))[0]
    for (label, listing), (ours, baseline) in state.statements.items():
        for _ in range(5):  # warm the cache and psycopg's prepared statements for both
            _timed(state.conn, ours)
            _timed(state.service, baseline)
        ours_times, baseline_times = [], []
        for _ in range(state.iterations):  # alternated, so drift on a shared machine hits both alike
            ours_times.append(_timed(state.conn, ours))
            baseline_times.append(_timed(state.service, baseline))
        ours_buffers = buffers(explain(state.conn, ours))
        metric = f"{listing}, {label}"
        results.append(
            Result(
                f"{metric}: RLS / service",
                "ms",
                statistics.median(baseline_times) * 1000,
                statistics.median(ours_times) * 1000,
                GOAL,
            )
        )
        results.append(
            Result(
                f"{metric}: RLS / service buffers",
                "buffers",
                buffers(explain(state.conn, baseline)),
                ours_buffers,
            )
        )
        if label == heavy:
            results.append(
                Result(f"{metric}: after / before migration", "buffers", state.before[listing], ours_buffers)
            )
    return results


def teardown(state: State) -> None:
    state.conn.close()
    state.service.close()
    drop_database(state.admin_url, state.name, state.storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small data set and fewer runs (a smoke test)")
    parser.add_argument("--db-url", help="a superuser URL of the server to use (default: the embedded one)")
    args = parser.parse_args()
    state = setup(args.db_url or embedded_database_url(), args.quick)
    try:
        print_table(measure(state), title="RLS listings against the service role (medians of one round)")
    finally:
        teardown(state)


if __name__ == "__main__":
    main()
