"""What every benchmark returns, and the one table `make bench` prints.

A benchmark module exposes `setup(admin_url, quick) -> state`, `measure(state) -> list[Result]` and
`teardown(state)`. `measure` runs the baseline and ours in the same process, one after the other, so a
ratio compares like with like on whatever machine runs it. The harness calls `measure` several times and
reports medians.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = ["Result", "create_database", "drop_database", "median_results", "print_table"]


def create_database(admin_url: str) -> tuple[str, str]:
    """A new empty database `ie_bench_<random>` on the server of `admin_url`: its name and URL."""
    name = f"ie_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return name, make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, name: str, *scratch: str | Path) -> None:
    """Drop a benchmark's database (whoever is still connected) and remove its scratch folders."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    for folder in scratch:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Result:
    """One line of the table.

    `ratio` is always ours / baseline, in the unit given. Whether higher or lower is better is said by
    the goal: `(">=", 0.95)` for a throughput, `("<=", 1.2)` for a time. A count (round trips per call,
    say) has its own goal and a baseline of the same count measured the old way, or None.
    """

    metric: str
    unit: str
    baseline: float | None
    ours: float
    goal: tuple[Literal[">=", "<="], float] | None = None
    paired: tuple[float, ...] = ()
    """Ratios of runs made side by side (baseline, then ours at once, or the other way round): when given,
    the ratio is their median rather than the ratio of the two medians, so a slow minute on a shared
    machine falls on both halves of a pair instead of on whichever figure it happened to hit."""

    @property
    def ratio(self) -> float | None:
        if self.paired:
            return statistics.median(self.paired)
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline  # type: ignore[operator]

    @property
    def compared(self) -> float:
        """The figure the goal applies to: the ratio, or the figure itself when there is no baseline."""
        ratio = self.ratio
        return self.ours if ratio is None else ratio

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        op, value = self.goal
        return self.compared >= value if op == ">=" else self.compared <= value


def median_results(rounds: Sequence[Sequence[Result]]) -> list[Result]:
    """The median of each metric over repeated rounds (figures and baseline separately, by metric name; the
    paired ratios of every round pooled)."""
    names = [r.metric for r in rounds[0]]
    merged: list[Result] = []
    for name in names:
        samples = [r for round_ in rounds for r in round_ if r.metric == name]
        baselines = [s.baseline for s in samples if s.baseline is not None]
        merged.append(
            Result(
                metric=name,
                unit=samples[0].unit,
                baseline=statistics.median(baselines) if baselines else None,
                ours=statistics.median(s.ours for s in samples),
                goal=samples[0].goal,
                paired=tuple(ratio for s in samples for ratio in s.paired),
            )
        )
    return merged


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(results: Sequence[Result], *, title: str | None = None, file: TextIO | None = None) -> None:
    header = ("metric", "unit", "baseline", "ours", "ratio", "goal", "met")
    rows = []
    for r in results:
        ratio = r.ratio
        goal = "" if r.goal is None else f"{r.goal[0]} {r.goal[1]:g}{'x' if ratio is not None else ''}"
        met = "" if r.met is None else ("yes" if r.met else "NO")
        rows.append(
            (
                r.metric,
                r.unit,
                _figure(r.baseline),
                _figure(r.ours),
                "-" if ratio is None else f"{ratio:.2f}x",
                goal,
                met,
            )
        )
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    if title:
        print(title, file=file)
    print(
        "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))),
        file=file,
    )
    for row in rows:
        print(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))),
            file=file,
        )
