"""`make bench` (benchmarks/run.py): each benchmark's lines are printed as soon as it finishes, and one
that fails is reported and passed over, so a failure late in a long run loses no figure already measured
and none still to come; the exit status says whether any failed."""

from __future__ import annotations

import pytest
from benchmarks import run as harness
from benchmarks._report import Result


def _runner(failing: set[str]) -> harness.Runner:
    def run(name: str) -> list[Result]:
        if name in failing:
            raise RuntimeError(f"{name}'s setup broke")
        return [Result(f"{name} list time", "ms", 2.0, 3.0, ("<=", 1.2))]  # a missed goal: a figure, not a failure

    return run


def test_a_failing_benchmark_costs_no_other_benchmark_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    status = harness.run_all(["first", "broken", "last"], _runner({"broken"}), title="medians of 1 rounds")
    out, err = capsys.readouterr()
    assert status == 1
    # As it went: the first benchmark's table before the failure, the failure with its error, the last one.
    assert err.index("first list time") < err.index("broken: FAILED") < err.index("last list time")
    assert "RuntimeError: broken's setup broke" in err
    table = out[out.index("medians of 1 rounds") :]
    assert "first list time" in table
    assert "last list time" in table
    assert "broken" not in table.split("\n\n")[0]
    assert "1 benchmark(s) failed (their errors are above): broken" in out
    assert "2 goal(s) missed" in out


def test_a_run_with_missed_goals_but_no_failure_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert harness.run_all(["only"], _runner(set()), title="t") == 0
    out, _ = capsys.readouterr()
    assert "1 goal(s) missed: only list time" in out
    assert "failed" not in out
