"""benchmarks/workers.py drops the database it made when its warm-up fails (a worker process that cannot
start, say), as every other failure of its setup does."""

from __future__ import annotations

import psycopg
import pytest
from benchmarks import workers as bench

from idea_expansion import WorkerProcessError
from idea_expansion.pipeline import Pipeline


def test_a_failed_warm_up_leaves_no_database(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def create_database(admin_url: str) -> tuple[str, str]:
        name, url = real_create_database(admin_url)
        made.append(name)
        return name, url

    def no_worker_starts(self: Pipeline, **_: object) -> int:
        raise WorkerProcessError("worker process 0 exited with code 1", processed=0, exit_codes={0: 1})

    real_create_database = bench.create_database
    monkeypatch.setattr(bench, "create_database", create_database)
    monkeypatch.setattr(Pipeline, "run_worker", no_worker_starts)
    with pytest.raises(WorkerProcessError):
        bench.setup(server_url, quick=True)
    assert len(made) == 1
    with psycopg.connect(server_url, autocommit=True) as conn:
        assert conn.execute("select count(*) from pg_database where datname = %s", (made[0],)).fetchone() == (0,)
