"""Database work per expansion (offline provider, one worker), counted on the wire.

One worker drains queued runs: a mix of blog posts, threads and images, then each format alone. Per
expansion (the worker's start-of-drain reap included):
  - lifecycle calls: calls of the run functions (start/claim, finish, stage, evaluation, delivery, ...),
  - calls: every SDK call that reaches the database (table requests, RPCs, storage uploads, downloads
    and removals),
  - transactions: the transactions the server ran (its BEGIN replies),
  - round trips: the answers the client waited for (the server's ReadyForQuery messages),
  - round trips per call: the goal is one.
Transactions and round trips come from libpq's trace of every pooled connection, not from the SDK's
code, so the same script measures any version of the backend (the previous one spent four per call).
The bucket settings the local storage reads once a minute are read before measuring, as a running
worker would have read them.

    .venv/bin/python benchmarks/pipeline_throughput.py [--quick] [--db-url URL]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import pq

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.backends._base import Request, Rpc, Scope
from idea_expansion.backends.postgres import PostgresBackend
from idea_expansion.local import embedded_database_url, find_project, reset
from idea_expansion.pipeline import OfflineProvider, Pipeline

try:  # run as a script (python benchmarks/pipeline_throughput.py) or imported by the harness
    from _report import Result, create_database, drop_database, print_table  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover
    from benchmarks._report import Result, create_database, drop_database, print_table  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
MIX = ("blog_post", "twitter_thread", "image")
ROUNDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mix", MIX),
    ("blog_post", ("blog_post",)),
    ("twitter_thread", ("twitter_thread",)),
    ("image", ("image",)),
    ("github_repo", ("github_repo",)),
)
POOL_SIZE = 4
GOAL: tuple[Literal["<="], float] = ("<=", 1.0)
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
_TRACE_FLAGS = pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE


# -- the wire ------------------------------------------------------------------------------------------
@dataclass
class Wire:
    """What the server said, counted: transactions begun and answers the client waited for."""

    transactions: int = 0
    round_trips: int = 0


@dataclass
class _Traced:
    conn: psycopg.Connection[Any]
    fd: int
    offset: int = 0


class WireTrace:
    """libpq's trace of connections (each to an anonymous temporary file), read between drains."""

    def __init__(self) -> None:
        self.traced: list[_Traced] = []

    def attach(self, conn: psycopg.Connection[Any]) -> None:
        fd, name = tempfile.mkstemp(prefix="ie-bench-wire-")
        os.unlink(name)
        conn.pgconn.trace(fd)
        conn.pgconn.set_trace_flags(_TRACE_FLAGS)
        self.traced.append(_Traced(conn, fd))

    @contextmanager
    def tracing_new_connections(self) -> Iterator[None]:
        """Trace every psycopg connection opened inside the block (whatever code opens it)."""
        cls_connect = psycopg.Connection.__dict__["connect"]
        real = cls_connect.__func__

        def connect(cls: type[psycopg.Connection[Any]], *args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
            conn = real(cls, *args, **kwargs)
            self.attach(conn)
            return conn

        psycopg.Connection.connect = classmethod(connect)  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            psycopg.Connection.connect = cls_connect  # type: ignore[method-assign]

    def forget_closed(self) -> None:
        """Stop following connections already closed (a one-off probe, like the backend's reachability check)."""
        for t in [t for t in self.traced if t.conn.closed]:
            os.close(t.fd)
            self.traced.remove(t)

    def take(self) -> Wire:
        """The traffic since the last take. Only while the connections are idle (between drains)."""
        wire = Wire()
        for t in self.traced:
            if t.conn.closed:
                raise RuntimeError("a traced connection was closed: its replacement would go uncounted")
            t.conn.pgconn.untrace()  # libpq buffers the trace stream; untracing flushes it
            size = os.fstat(t.fd).st_size
            text = os.pread(t.fd, size - t.offset, t.offset).decode("utf-8", "replace")
            t.offset = size
            t.conn.pgconn.trace(t.fd)
            t.conn.pgconn.set_trace_flags(_TRACE_FLAGS)
            for line in text.splitlines():
                parts = line.split("\t", 3)
                if len(parts) < 3 or parts[0] != "B":
                    continue
                if parts[2] == "ReadyForQuery":
                    wire.round_trips += 1
                elif parts[2] == "CommandComplete" and parts[3].strip() == '"BEGIN"':
                    wire.transactions += 1
        return wire

    def close(self) -> None:
        for t in self.traced:
            if not t.conn.closed:
                t.conn.pgconn.untrace()
            os.close(t.fd)


# -- the SDK's calls -----------------------------------------------------------------------------------
@dataclass
class Calls:
    lifecycle: int = 0
    calls: int = 0


class CountingBackend(PostgresBackend):
    """The real backend, counting the SDK's table requests and RPCs (each one call)."""

    def __init__(self, url: str) -> None:
        # Every connection is opened now, while traced: a fixed pool, so none is opened later.
        super().__init__(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        self.counts = Calls()
        self.lock = threading.Lock()

    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        with self.lock:
            self.counts.calls += 1
        return super().execute(request, scope)

    def rpc(self, request: Rpc, scope: Scope) -> Any:
        with self.lock:
            self.counts.calls += 1
            self.counts.lifecycle += request.function in LIFECYCLE
        return super().rpc(request, scope)


def count_storage_calls(client: IdeaExpansion, backend: CountingBackend) -> None:
    """Count the local storage's uploads, downloads and removals as calls too (a signed URL is a download)."""
    storage = client.storage_backend
    for name in ("upload", "download", "remove"):
        method: Callable[..., Any] = getattr(storage, name)

        @functools.wraps(method)
        def counted(*args: Any, __method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            with backend.lock:
                backend.counts.calls += 1
            return __method(*args, **kwargs)

        setattr(storage, name, counted)


# -- the benchmark -------------------------------------------------------------------------------------
@dataclass
class State:
    admin_url: str
    name: str
    storage: Path
    runs: int
    wire: WireTrace
    backend: CountingBackend
    client: IdeaExpansion
    pipeline: Pipeline


def setup(admin_url: str, quick: bool) -> State:
    name, url = create_database(admin_url)
    storage = Path(tempfile.mkdtemp(prefix="ie-bench-"))
    wire = WireTrace()
    backend: CountingBackend | None = None
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn, find_project(ROOT / "supabase"), seed=False)
        with wire.tracing_new_connections():
            backend = CountingBackend(url)
        # PostgresBackend connects once and closes before it opens its pool (an unreachable database fails
        # fast): that probe carries none of the runs' traffic.
        wire.forget_closed()
        if len(wire.traced) != POOL_SIZE:
            raise RuntimeError(f"traced {len(wire.traced)} connections, the pool has {POOL_SIZE}")
        settings = Settings(_env_file=None, DATABASE_URL=url)  # type: ignore[call-arg]
        client = IdeaExpansion(settings=settings, backend=backend, storage_dir=storage / "files")
        count_storage_calls(client, backend)
        pipeline = Pipeline(client, provider=OfflineProvider())
        # The local storage reads a bucket's settings once a minute (one more round trip for that upload);
        # read them now, as a long-running worker would have.
        user = client.users.create(email=f"bench-{uuid.uuid4().hex[:12]}@example.test").id
        client.for_user(user).storage.upload(f"{user}/warm.png", b"\x89PNG")
    except BaseException:
        if backend is not None:
            backend.close()
        _drop(admin_url, name, storage, wire)
        raise
    return State(admin_url, name, storage, 6 if quick else 30, wire, backend, client, pipeline)


def _enqueue(state: State, formats: tuple[str, ...]) -> None:
    """`state.runs` queued runs of `formats` (in turn), for users with credits enough."""
    client = state.client
    for n in range(state.runs):
        if n % 10 == 0:
            user = client.users.create(email=f"bench-{uuid.uuid4().hex[:12]}@example.test").id
            client.credits.grant(user, 10, "10.00", f"BENCH-{uuid.uuid4().hex}")
        idea = client.ideas.create(user_id=user, title=f"Benchmark idea {n}", bullets=["one", "two"]).id
        state.pipeline.enqueue(user, idea_id=idea, format=formats[n % len(formats)])


def _per_expansion(state: State, formats: tuple[str, ...]) -> tuple[int, Calls, Wire]:
    _enqueue(state, formats)
    state.wire.take()  # the set-up's traffic is not the worker's
    before = Calls(**vars(state.backend.counts))
    # Exactly the queued runs: no last, empty claim to subtract.
    done = state.pipeline.run_worker(concurrency=1, exit_when_idle=True, max_runs=state.runs)
    wire = state.wire.take()
    after = state.backend.counts
    if done != state.runs:
        raise RuntimeError(f"the worker took {done} of {state.runs} queued runs")
    return done, Calls(after.lifecycle - before.lifecycle, after.calls - before.calls), wire


def measure(state: State) -> list[Result]:
    results: list[Result] = []
    for label, formats in ROUNDS:
        done, calls, wire = _per_expansion(state, formats)
        tag = f"expansion ({label}, 1 worker)"
        results += [
            Result(f"{tag}: lifecycle calls", "per run", None, calls.lifecycle / done),
            Result(f"{tag}: calls", "per run", None, calls.calls / done),
            Result(f"{tag}: transactions", "per run", None, wire.transactions / done),
            Result(f"{tag}: round trips", "per run", None, wire.round_trips / done),
            Result(f"{tag}: round trips per call", "trips", None, wire.round_trips / calls.calls, GOAL),
        ]
    return results


def teardown(state: State) -> None:
    state.client.close()
    _drop(state.admin_url, state.name, state.storage, state.wire)


def _drop(admin_url: str, name: str, storage: Path, wire: WireTrace) -> None:
    wire.close()
    drop_database(admin_url, name, storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per round (a smoke test)")
    parser.add_argument("--db-url", help="a superuser URL of the server to use (default: the embedded one)")
    args = parser.parse_args()
    state = setup(args.db_url or embedded_database_url(), args.quick)
    try:
        print_table(measure(state), title=f"database work per expansion ({state.runs} runs per round, on the wire)")
    finally:
        teardown(state)


if __name__ == "__main__":
    main()
