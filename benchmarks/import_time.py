"""Import time: `import idea_expansion` beside `import supabase`, each in a fresh interpreter.

Both are timed in the same run, alternating, so the ratio holds on whatever machine runs it. Each
sample is one new `python -c` process, measured from inside (time.perf_counter around the import), so
interpreter start-up is not counted for either.

    .venv/bin/python benchmarks/import_time.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import dataclass

from _report import Result, print_table

_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


@dataclass
class State:
    samples: int


def setup(admin_url: str | None = None, quick: bool = False) -> State:
    return State(samples=5 if quick else 15)


def _import_seconds(module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-X", "frozen_modules=on", "-c", _PROBE.format(module=module)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


def measure(state: State) -> list[Result]:
    ours: list[float] = []
    baseline: list[float] = []
    for _ in range(state.samples):
        baseline.append(_import_seconds("supabase"))
        ours.append(_import_seconds("idea_expansion"))
    return [
        Result(
            "import idea_expansion vs import supabase",
            "ms",
            statistics.median(baseline) * 1000,
            statistics.median(ours) * 1000,
        )
    ]


def teardown(state: State) -> None:
    pass


if __name__ == "__main__":
    print_table(measure(setup()))
