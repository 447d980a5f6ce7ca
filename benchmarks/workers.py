"""Runs per second with 1, 2 and 4 workers draining a queue, and the cost of the title-card PNG.

Each round queues the same number of runs (blog posts, threads and images in turn, offline provider) in
a database of its own and drains them with `Pipeline.run_worker(concurrency=N, exit_when_idle=True)`:
worker processes where the code has them (a `threads_per_process` parameter), threads in the older code,
so the same script prints the table before and after. Ratios are against the 1-worker round of the same
`measure` call. On a 2-core machine the database server shares the cores with the workers, so 2 workers
have a goal (>= 1.8x) and 4 are only reported. The worker processes' start (from a forkserver warmed up
in `setup`, as a long-running worker would be) is part of the time.

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
    state = State(admin_url, database, storage, client, Pipeline(client, provider=OfflineProvider()), 0, 0)
    state.runs, state.images = (60, 10) if quick else (240, 30)
    try:
        # Warm up: the first round of worker processes starts the forkserver, once per process.
        _queue(state, 20)
        state.pipeline.run_worker(concurrency=2, exit_when_idle=True)
    except BaseException:  # a worker that cannot start (say) must not leave the database behind
        teardown(state)
        raise
    return state


def measure(state: State) -> list[Result]:
    results: list[Result] = []
    baseline: float | None = None
    for workers in WORKERS:
        _queue(state, state.runs)
        started, cpu = time.perf_counter(), time.process_time()
        done = state.pipeline.run_worker(concurrency=workers, exit_when_idle=True)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if done != state.runs:
            raise RuntimeError(f"{workers} worker(s) processed {done} of {state.runs} queued runs")
        rate = done / elapsed
        print(f"  workers: {workers} x {'process' if PROCESSES else 'thread'}: {rate:.1f} runs/s", file=sys.stderr)
        if workers == 1:
            baseline = rate
            results.append(Result("workers: runs/s, 1 worker", "runs/s", None, rate))
            # All of a 1-worker round runs in this process: its CPU per run is what a worker spends.
            results.append(Result("workers: worker CPU per run, 1 worker", "ms", None, cpu / done * 1000))
        else:
            goal = (">=", 1.8) if workers == 2 else None
            results.append(Result(f"workers: runs/s, {workers} workers", "runs/s", baseline, rate, goal))  # type: ignore[arg-type]
    results.extend(_images(state.images))
    return results


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
