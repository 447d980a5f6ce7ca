"""Expansions per second with 1, 2 and 4 workers on the offline provider, and database work per run.

Each round drains the same number of queued runs (a mix of blog posts, threads and images) from a
fresh database with `Pipeline.run_worker(concurrency=N)`; ratios are against the 1-worker round of the
same process, so they compare like with like on whatever machine runs this. Database work is counted
as request transactions per run (each is BEGIN, role+claims, statement, COMMIT: four round trips),
including the worker's claims.

    .venv/bin/python benchmarks/pipeline_throughput.py [--runs 120] [--db-url URL]
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid
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


class CountingBackend(PostgresBackend):
    """The real backend, counting request transactions: every execute, rpc and storage call opens one."""

    def __init__(self, url: str) -> None:
        super().__init__(url, max_size=12)
        self.requests = 0
        self._lock = threading.Lock()

    def transaction(self, scope: Scope) -> Any:
        with self._lock:
            self.requests += 1
        return super().transaction(scope)


def prepare(client: IdeaExpansion, pipeline: Pipeline, runs: int) -> None:
    users = max(1, runs // 10)
    made = 0
    for u in range(users):
        user = client.users.create(email=f"bench-{u}-{uuid.uuid4().hex[:6]}@example.test").id
        client.credits.grant(user, 10, "10.00", f"BENCH-{uuid.uuid4().hex}")
        for n in range(runs // users):
            idea = client.ideas.create(user_id=user, title=f"Benchmark idea {u}-{n}", bullets=["one", "two"]).id
            pipeline.enqueue(user, idea_id=idea, format=FORMATS[made % len(FORMATS)])
            made += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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

        print(f"{args.runs} runs per round ({', '.join(FORMATS)}), offline provider, database {name}")
        header = ("workers", "seconds", "runs/s", "vs 1 worker", "transactions/run", "round trips/run")
        print("  ".join(f"{h:>{w}}" for h, w in zip(header, (7, 8, 7, 11, 16, 15), strict=True)))
        baseline = None
        for workers in (1, 2, 4):
            prepare(client, pipeline, args.runs)
            requests_before = backend.requests
            started = time.perf_counter()
            done = pipeline.run_worker(concurrency=workers, exit_when_idle=True)
            elapsed = time.perf_counter() - started
            requests = (backend.requests - requests_before) / done
            rate = done / elapsed
            baseline = baseline or rate
            print(
                f"{workers:>7}  {elapsed:>8.2f}  {rate:>7.1f}  {rate / baseline:>10.2f}x  {requests:>16.1f}  "
                f"{4 * requests:>15.1f}"
            )
        client.close()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
