"""`make bench`: every benchmark, each beside its baseline in the same run, repeated; one table of medians.

    .venv/bin/python benchmarks/run.py [--db-url URL] [--repeat 3] [--quick] [--only charge,workers]

The database server is `--db-url`, else DATABASE_URL, else the embedded PostgreSQL (started on demand).
Every benchmark creates its own database on it and drops it afterwards. benchmarks/README.md says how to
read the table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

try:  # run as a script (python benchmarks/run.py) or imported by the tests
    from _report import Result, median_results, print_table  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover
    from benchmarks._report import Result, median_results, print_table  # type: ignore[no-redef]

BENCHMARKS = ("charge", "rls_listings", "sdk_page", "pipeline_throughput", "workers", "import_time")


def _server_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from idea_expansion.local import embedded_database_url

    return embedded_database_url()


def run(name: str, admin_url: str, repeat: int, quick: bool) -> list[Result]:
    module: Any = importlib.import_module(name)
    started = time.perf_counter()
    state = module.setup(admin_url, quick)
    try:
        rounds = []
        for n in range(repeat):
            print(f"  {name}: round {n + 1}/{repeat}", file=sys.stderr, flush=True)
            rounds.append(module.measure(state))
    finally:
        module.teardown(state)
    print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return median_results(rounds)


Runner = Callable[[str], list[Result]]


def run_all(chosen: Sequence[str], runner: Runner, *, title: str) -> int:
    """Run each benchmark in turn and print one table of all their results; the exit status.

    Each benchmark's own lines go to stderr as soon as it finishes, and a benchmark that fails is
    reported and passed over: a failure late in a long run loses neither the figures already measured
    nor the benchmarks after it. The status is 1 when any benchmark failed, else 0 (a missed goal is a
    figure, not a failure)."""
    results: list[Result] = []
    failed: list[str] = []
    for name in chosen:
        try:
            done = runner(name)
        except Exception:  # one benchmark's failure must not cost the others their results
            print(f"  {name}: FAILED", file=sys.stderr, flush=True)
            traceback.print_exc()
            failed.append(name)
            continue
        print_table(done, title=f"  {name}:", file=sys.stderr)
        sys.stderr.flush()
        results.extend(done)
    print()
    print_table(results, title=title)
    missed = [r.metric for r in results if r.met is False]
    if missed:
        print(f"\n{len(missed)} goal(s) missed: {'; '.join(missed)}")
    if failed:
        print(f"\n{len(failed)} benchmark(s) failed (their errors are above): {', '.join(failed)}")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--db-url", help="a superuser URL of the server to use")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per benchmark; the table shows medians")
    parser.add_argument("--quick", action="store_true", help="smaller data sets and shorter runs (a smoke test)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    admin_url = _server_url(args.db_url)
    title = f"medians of {args.repeat} rounds{' (quick)' if args.quick else ''}"
    sys.exit(run_all(chosen, lambda name: run(name, admin_url, args.repeat, args.quick), title=title))


if __name__ == "__main__":
    main()
