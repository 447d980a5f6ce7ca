"""Runs per second with 1, 2 and 4 workers draining a queue, and the cost of the title-card PNG.

Each round queues the same number of runs (blog posts, threads and images in turn, offline provider) in
a database of its own and drains them with `Pipeline.run_worker(concurrency=N, exit_when_idle=True)`:
worker processes where the code has them (a `threads_per_process` parameter), threads in the older code,
so the same script prints the table before and after. A `measure` call runs 1, 2 and 4 workers, then 4,
2 and 1 again. A worker count's rate is over its two rounds; its ratio is the median of two pairs, each an
N-worker round over the 1-worker round at the same end of the order, so drift during the call weighs on
both halves of a pair. On a 2-core machine the database server shares the cores with the workers, so 2
workers have a goal (>= 1.8x) and 4 are only reported. The worker processes' start (from a forkserver
warmed up in `setup`, as a long-running worker would be) is part of the time; a line gives its cost
alone (2 processes on an empty queue). Rounds are long enough (900 runs) that it is a few percent of one.

The image rows: CPU milliseconds to draw and encode one 1200x630 title card, and its bytes, with the old
encoding (`optimize=True`) as the baseline and the code's own `render_title_card` as ours.

    .venv/bin/python benchmarks/workers.py [--quick] [--db-url URL]
"""

from __future__ import annotations

import argparse
import inspect
import io
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp

import psycopg

from idea_expansion import IdeaExpansion, Settings
from idea_expansion.local import embedded_database_url, find_project, reset
from idea_expansion.pipeline import OfflineProvider, Pipeline, formats

try:  # run as a script (python benchmarks/workers.py) or imported by the harness
    from _report import Result, create_database, drop_database, print_table  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover
    from benchmarks._report import Result, create_database, drop_database, print_table  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("blog_post", "twitter_thread", "image")
WORKERS = (1, 2, 4)
CARDS = (
    ("Benchmark idea 3-7", "Drafted offline from the idea's own notes by templates; no language model was used."),
    ("A much longer headline about building a command line tool that parses logs", "Short caption"),
    ("Explain regular expressions", "Title card caption here with a few words in it."),
)
PROCESSES = "threads_per_process" in inspect.signature(Pipeline.run_worker).parameters
"""True where `concurrency` means worker processes; the older code ran threads."""


@dataclass
class State:
    admin_url: str
    database: str
    url: str
    storage: str
    client: IdeaExpansion
    pipeline: Pipeline
    runs: int
    images: int


def setup(admin_url: str, quick: bool) -> State:
    database, url = create_database(admin_url)
    storage = mkdtemp(prefix="ie-bench-workers-")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn, find_project(ROOT / "supabase"), seed=False)
        settings = Settings(_env_file=None, DATABASE_URL=url)  # type: ignore[call-arg]
        client = IdeaExpansion(settings=settings, backend="postgres", storage_dir=storage)
    except BaseException:
        drop_database(admin_url, database, storage)
        raise
    state = State(admin_url, database, url, storage, client, Pipeline(client, provider=OfflineProvider()), 0, 0)
    state.runs, state.images = (30, 10) if quick else (900, 30)
    try:
        # Warm up, as a long-running worker would be: the first round of worker processes starts the
        # forkserver (once per process), and a round in this process warms what a 1-worker round uses.
        for workers in (2, 1):
            _queue(state, 20)
            state.pipeline.run_worker(concurrency=workers, exit_when_idle=True)
    except BaseException:  # a worker that cannot start (say) must not leave the database behind
        teardown(state)
        raise
    return state


ORDER = (*WORKERS, *reversed(WORKERS))
"""The rounds of one `measure`: 1, 2, 4 workers, then 4, 2, 1. Each worker count's rate is over its two
rounds, and each 2- or 4-worker round is paired with the 1-worker round at the same end, so a machine that
drifts during the call (a shared one does) weighs on both halves of a ratio alike."""


def measure(state: State) -> list[Result]:
    elapsed: dict[int, list[float]] = {workers: [] for workers in WORKERS}
    cpu_one_worker = 0.0
    for workers in ORDER:
        _queue(state, state.runs)
        _settle(state)
        started, cpu = time.perf_counter(), time.process_time()
        done = state.pipeline.run_worker(concurrency=workers, exit_when_idle=True)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        if done != state.runs:
            raise RuntimeError(f"{workers} worker(s) processed {done} of {state.runs} queued runs")
        elapsed[workers].append(took)
        if workers == 1:
            # All of a 1-worker round runs in this process: its CPU per run is what a worker spends.
            cpu_one_worker += cpu
        kind = "process" if PROCESSES else "thread"
        print(f"  workers: {workers} x {kind}: {done / took:.1f} runs/s", file=sys.stderr)
    rate = {workers: len(took) * state.runs / sum(took) for workers, took in elapsed.items()}
    results = [
        Result("workers: runs/s, 1 worker", "runs/s", None, rate[1]),
        Result(
            "workers: worker CPU per run, 1 worker", "ms", None, cpu_one_worker / (ORDER.count(1) * state.runs) * 1000
        ),
    ]
    for workers in WORKERS[1:]:
        # A 1-worker round's time over the N-worker round's at the same end of the order: their rate ratio.
        paired = tuple(one / many for one, many in zip(elapsed[1], elapsed[workers], strict=True))
        goal = (">=", 1.8) if workers == 2 else None
        results.append(Result(f"workers: runs/s, {workers} workers", "runs/s", rate[1], rate[workers], goal, paired))  # type: ignore[arg-type]
    results.append(_start_and_stop(state))
    results.extend(_images(state.images))
    return results


def _settle(state: State) -> None:
    """Every round starts from the same state: the tables vacuumed and their statistics fresh, as a
    long-running database's autovacuum keeps them, rather than autovacuum waking during some rounds."""
    with psycopg.connect(state.url, autocommit=True) as conn:
        conn.execute("vacuum analyze")


def _start_and_stop(state: State, times: int = 5) -> Result:
    """What a round of 2 worker processes costs beyond its runs: starting both (from the forkserver), each
    building its client and finding the queue empty, and stopping. Part of every 2-worker round's time."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        state.pipeline.run_worker(concurrency=2, exit_when_idle=True)
        took.append((time.perf_counter() - started) * 1000)
    return Result("workers: start and stop 2 worker processes, empty queue", "ms", None, statistics.median(took))


def teardown(state: State) -> None:
    state.pipeline.close()
    state.client.close()
    drop_database(state.admin_url, state.database, state.storage)


def _queue(state: State, runs: int) -> None:
    """`runs` queued runs, ten per user, formats in turn."""
    client, made = state.client, 0
    while made < runs:
        user = client.users.create(email=f"bench-{uuid.uuid4().hex[:10]}@example.test").id
        client.credits.grant(user, 10, "10.00", f"BENCH-{uuid.uuid4().hex}")
        for n in range(min(10, runs - made)):
            idea = client.ideas.create(user_id=user, title=f"Benchmark idea {made}-{n}", bullets=["one", "two"]).id
            state.pipeline.enqueue(user, idea_id=idea, format=FORMATS[made % len(FORMATS)])
            made += 1


def _old_render(headline: str, caption: str) -> bytes:
    """The title card as the old code made it: the same pixels, `optimize=True`."""
    draw = getattr(formats, "draw_title_card", None)
    if draw is None:  # the old code itself
        return formats.render_title_card(headline, caption)
    buffer = io.BytesIO()
    draw(headline, caption).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _images(rounds: int) -> list[Result]:
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    size: dict[str, list[int]] = {"old": [], "new": []}
    renders = {"old": _old_render, "new": formats.render_title_card}
    for _ in range(rounds):
        for headline, caption in CARDS:
            for kind, render in renders.items():
                started = time.process_time()
                data = render(headline, caption)
                cpu[kind].append((time.process_time() - started) * 1000)
                size[kind].append(len(data))
    return [
        Result(
            "images: title card draw + encode, CPU",
            "ms/image",
            statistics.median(cpu["old"]),
            statistics.median(cpu["new"]),
            ("<=", 0.5),
        ),
        Result(
            "images: title card PNG size",
            "bytes",
            statistics.mean(size["old"]),
            statistics.mean(size["new"]),
            ("<=", 1.5),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per round (a smoke test)")
    parser.add_argument("--db-url", help="a superuser URL of the server to use (default: the embedded one)")
    args = parser.parse_args()
    state = setup(args.db_url or embedded_database_url(), args.quick)
    try:
        results = measure(state)
    finally:
        teardown(state)
    mode = "processes" if PROCESSES else "threads (the older code)"
    print_table(results, title=f"workers as {mode}, {state.runs} runs per round")


if __name__ == "__main__":
    main()
