"""The SDK's typed page of 50 ideas against raw psycopg sending the same request in one round trip.

  - baseline: one psycopg connection, dict rows: BEGIN, set_config (role and JWT claims), the very
    statement the SDK sends for `client.for_user(u).ideas.list(limit=50)` (recorded from a real call),
    COMMIT, all in one pipeline;
  - ours: that SDK call, returning 50 validated `Idea` models.
The figure is the median time per call over many calls, alternated so drift on a shared machine hits
both alike. The user has a few hundred ideas; the goal is ours <= 1.2x the baseline.

    .venv/bin/python benchmarks/sdk_page.py [--quick] [--db-url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.backends._base import Request, Scope
from idea_expansion.backends.postgres import PostgresBackend, compile_request
from idea_expansion.local import embedded_database_url, find_project, reset

try:  # run as a script (python benchmarks/sdk_page.py) or imported by the harness
    from _report import Result, create_database, drop_database, print_table  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover
    from benchmarks._report import Result, create_database, drop_database, print_table  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
IDEAS = 300
PAGE = 50
GOAL: tuple[Literal["<="], float] = ("<=", 1.2)


class RecordingBackend(PostgresBackend):
    """The real backend, remembering the statement of every table request while `recording` (it still
    runs it); not while measured, so the SDK's figure is the SDK's own."""

    def __init__(self, url: str) -> None:
        super().__init__(url, min_size=1, max_size=1)
        self.recording = True
        self.sent: list[tuple[sql.Composed, list[Any]]] = []

    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        if self.recording:
            self.sent.append(compile_request(request, scope))
        return super().execute(request, scope)


@dataclass
class State:
    admin_url: str
    name: str
    storage: Path
    iterations: int
    client: IdeaExpansion
    user: uuid.UUID
    conn: psycopg.Connection[dict[str, Any]]
    statement: bytes
    params: list[Any]


def setup(admin_url: str, quick: bool) -> State:
    name, url = create_database(admin_url)
    storage = Path(tempfile.mkdtemp(prefix="ie-bench-"))
    client: IdeaExpansion | None = None
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn, find_project(ROOT / "supabase"), seed=False)
        backend = RecordingBackend(url)
        settings = Settings(_env_file=None, DATABASE_URL=url)  # type: ignore[call-arg]
        client = IdeaExpansion(settings=settings, backend=backend, storage_dir=storage)
        user = client.users.create(email=f"bench-{uuid.uuid4().hex[:12]}@example.test").id
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "insert into public.ideas (user_id, title, description, bullets, created_at) "
                "select %s, 'Idea ' || n, 'A description of idea ' || n || ', long enough to be typical.', "
                "jsonb_build_array('first point', 'second point', 'third point'), now() - n * interval '1 minute' "
                "from generate_series(1, %s) as n",
                (user, IDEAS),
            )
            conn.execute("analyze public.ideas")
        backend.sent.clear()
        page = client.for_user(user).ideas.list(limit=PAGE)
        if len(page.data) != PAGE or page.next_cursor is None or len(backend.sent) != 1:
            raise RuntimeError(
                f"expected one statement and a full page of {PAGE} ideas, got {len(backend.sent)} and {page!r}"
            )
        query, params = backend.sent[0]
        backend.recording = False
        raw: psycopg.Connection[dict[str, Any]] = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        # The statement as bytes, exactly as the SDK's connection renders it for the server.
        statement = query.as_bytes(raw)
    except BaseException:
        if client is not None:
            client.close()
        drop_database(admin_url, name, storage)
        raise
    return State(admin_url, name, storage, 300 if quick else 3000, client, user, raw, statement, params)


def _raw_page(state: State, context: tuple[str, str]) -> list[dict[str, Any]]:
    """What the SDK's request is, by hand: one pipeline, one round trip, dict rows."""
    conn = state.conn
    with conn.pipeline():
        conn.execute(b"begin")
        conn.execute(b"select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)", context)
        cursor = conn.execute(state.statement, state.params)
        conn.execute(b"commit")
    return cursor.fetchall()


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - started) / 1000


def measure(state: State) -> list[Result]:
    view = state.client.for_user(state.user)
    context = ("authenticated", json.dumps(Scope("authenticated", state.user).claims()))

    def ours() -> object:
        return view.ideas.list(limit=PAGE)

    def baseline() -> object:
        return _raw_page(state, context)

    # The statement asks one row more than the page (it tells the SDK that another page exists).
    if len(_raw_page(state, context)) != PAGE + 1:
        raise RuntimeError("the baseline's page is not a full page")
    for _ in range(20):  # warm both connections (and psycopg's prepared statements on each)
        ours()
        baseline()
    ours_times, baseline_times = [], []
    for _ in range(state.iterations):
        ours_times.append(_timed(ours))
        baseline_times.append(_timed(baseline))
    return [
        Result(
            f"typed page of {PAGE} (user with {IDEAS} ideas): SDK / raw psycopg pipeline",
            "us/call",
            statistics.median(baseline_times),
            statistics.median(ours_times),
            GOAL,
        )
    ]


def teardown(state: State) -> None:
    state.conn.close()
    state.client.close()
    drop_database(state.admin_url, state.name, state.storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke test)")
    parser.add_argument("--db-url", help="a superuser URL of the server to use (default: the embedded one)")
    args = parser.parse_args()
    state = setup(args.db_url or embedded_database_url(), args.quick)
    try:
        print_table(measure(state), title="the SDK's typed page against raw psycopg (median of one round)")
    finally:
        teardown(state)


if __name__ == "__main__":
    main()
