"""Database work per expansion, and expansions per second with 1, 2 and 4 workers (offline provider).

Part 1, per format: one worker drains queued runs of that format; per run it prints
  - lifecycle calls: calls of the run functions (start/claim, finish, stage, evaluation, delivery, ...),
  - calls: every SDK request to the database (lifecycle calls, reads, storage rows),
  - transactions: request transactions (each is one SDK call, as PostgREST would run it),
  - round trips: what those transactions cost on the wire: BEGIN, role + claims, each statement, COMMIT.
Part 2: each round drains the same number of queued runs (a mix of blog posts, threads and images) from
the same database with `Pipeline.run_worker(concurrency=N)`; ratios are against the 1-worker round of
the same process, so they compare like with like on whatever machine runs this.

    .venv/bin/python benchmarks/pipeline_throughput.py [--runs 120] [--db-url URL]
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.backends._base import Scope
from idea_expansion.backends.postgres import PostgresBackend
from idea_expansion.local import embedded_database_url, find_project, reset
from idea_expansion.pipeline import OfflineProvider, Pipeline

FORMATS = ("blog_post", "twitter_thread", "image")
# The run functions, before and after the lifecycle moved into the database (so the same script
# measures either version of the code).
LIFECYCLE = {
    "start_expansion",
    "claim_next_expansion",
    "finish_expansion",
    "record_expansion_stage",
    "record_expansion_evaluation",
    "record_expansion_delivery",
    "record_idea_evaluation",
    "mark_expansion_partial",
}


@dataclass
class Counts:
    lifecycle: int = 0
    calls: int = 0
    transactions: int = 0
    round_trips: int = 0


class _Counted:
    """A connection whose statements are counted (each `execute` is one round trip)."""

    def __init__(self, conn: Any, counts: Counts, lock: threading.Lock) -> None:
        self._conn, self._counts, self._lock = conn, counts, lock

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._counts.round_trips += 1
        return self._conn.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class CountingBackend(PostgresBackend):
    """The real backend, counting calls, transactions and the round trips they make."""

    def __init__(self, url: str) -> None:
        super().__init__(url, max_size=12)
        self.counts = Counts()
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self, scope: Scope) -> Iterator[Any]:
        with self._lock:
            # BEGIN, the role + claims statement and COMMIT; the statements inside are counted as sent.
            self.counts.transactions += 1
            self.counts.round_trips += 3
        with super().transaction(scope) as conn:
            yield _Counted(conn, self.counts, self._lock)

    def execute(self, request: Any, scope: Scope) -> list[dict[str, Any]]:
        with self._lock:
            self.counts.calls += 1
        return super().execute(request, scope)

    def rpc(self, request: Any, scope: Scope) -> Any:
        with self._lock:
            self.counts.calls += 1
            self.counts.lifecycle += request.function in LIFECYCLE
        return super().rpc(request, scope)

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(**vars(self.counts))


def prepare(client: IdeaExpansion, pipeline: Pipeline, runs: int, formats: tuple[str, ...]) -> None:
    users = max(1, runs // 10)
    made = 0
    for u in range(users):
        user = client.users.create(email=f"bench-{u}-{uuid.uuid4().hex[:6]}@example.test").id
        client.credits.grant(user, 10, "10.00", f"BENCH-{uuid.uuid4().hex}")
        for n in range(runs // users):
            idea = client.ideas.create(user_id=user, title=f"Benchmark idea {u}-{n}", bullets=["one", "two"]).id
            pipeline.enqueue(user, idea_id=idea, format=formats[made % len(formats)])
            made += 1


def drain(backend: CountingBackend, pipeline: Pipeline, workers: int) -> tuple[int, float, Counts]:
    before = backend.snapshot()
    started = time.perf_counter()
    done = pipeline.run_worker(concurrency=workers, exit_when_idle=True)
    elapsed = time.perf_counter() - started
    after = backend.snapshot()
    per_run = Counts(*((getattr(after, f) - getattr(before, f)) for f in vars(after)))
    return done, elapsed, per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=120, help="queued runs per round (default 120)")
    parser.add_argument("--db-url", help="a superuser URL of the server to use (default: the embedded one)")
    args = parser.parse_args()

    admin_url = args.db_url or embedded_database_url()
    name = f"ie_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn, find_project(Path(__file__).resolve().parent.parent / "supabase"), seed=False)
        backend = CountingBackend(url)
        settings = Settings(_env_file=None, DATABASE_URL=url)  # type: ignore[call-arg]
        client = IdeaExpansion(settings=settings, backend=backend, storage_dir=mkdtemp(prefix="ie-bench-"))
        pipeline = Pipeline(client, provider=OfflineProvider())

        print(f"database work per run (offline provider, 1 worker, database {name}; the worker's claims included)")
        header = ("format", "lifecycle calls", "calls", "transactions", "round trips")
        print("  ".join(f"{h:>{w}}" for h, w in zip(header, (16, 15, 6, 12, 11), strict=True)))
        for fmt in (*FORMATS, "github_repo"):
            prepare(client, pipeline, 20, (fmt,))
            done, _, c = drain(backend, pipeline, 1)
            # The idle worker's last, empty claim is not part of any run.
            c.lifecycle, c.calls, c.transactions, c.round_trips = (
                c.lifecycle - 1,
                c.calls - 1,
                c.transactions - 1,
                c.round_trips - 4,
            )
            print(
                f"{fmt:>16}  {c.lifecycle / done:>15.1f}  {c.calls / done:>6.1f}  {c.transactions / done:>12.1f}  "
                f"{c.round_trips / done:>11.1f}"
            )

        print(f"\n{args.runs} runs per round ({', '.join(FORMATS)})")
        header = ("workers", "seconds", "runs/s", "vs 1 worker", "transactions/run", "round trips/run")
        print("  ".join(f"{h:>{w}}" for h, w in zip(header, (7, 8, 7, 11, 16, 15), strict=True)))
        baseline = None
        for workers in (1, 2, 4):
            prepare(client, pipeline, args.runs, FORMATS)
            done, elapsed, c = drain(backend, pipeline, workers)
            rate = done / elapsed
            baseline = baseline or rate
            print(
                f"{workers:>7}  {elapsed:>8.2f}  {rate:>7.1f}  {rate / baseline:>10.2f}x  "
                f"{c.transactions / done:>16.1f}  {c.round_trips / done:>15.1f}"
            )
        client.close()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)) + sql.SQL(" with (force)"))


if __name__ == "__main__":
    main()
