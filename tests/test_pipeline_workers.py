"""Workers as separate processes: a worker killed with SIGKILL mid-run is reaped and its credit
released, and four worker processes drain 200 queued runs, each processed exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from idea_expansion import ExecutionStatus, IdeaExpansion, Settings
from idea_expansion.local import SupabaseProject
from idea_expansion.pipeline import OfflineProvider, Pipeline

from ._db import Db
from .conftest import migrated_database


@pytest.fixture
def database_url(fresh_database, project: SupabaseProject) -> str:  # type: ignore[no-untyped-def]
    """A database of its own for each test: worker processes claim every queued run they can see."""
    return migrated_database(fresh_database, project)


@pytest.fixture
def db(database_url: str):  # type: ignore[no-untyped-def]
    handle = Db(database_url)
    yield handle
    handle.close()


@pytest.fixture
def client(database_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    settings = Settings(_env_file=None, DATABASE_URL=database_url)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path_factory.mktemp("storage")) as sdk:
        yield sdk


def start_worker(database_url: str, storage: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "NEXT_PUBLIC_SUPABASE"))}
    env["IDEA_EXPANSION_STORAGE_DIR"] = str(storage)
    return subprocess.Popen(
        [sys.executable, "-m", "idea_expansion", "worker", "--db-url", database_url, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_a_killed_worker_is_reaped_and_another_finishes_the_queue(
    client: IdeaExpansion, db: Db, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider())
    user = client.users.create(email=f"kill-{uuid.uuid4().hex[:8]}@example.test").id
    runs = [
        pipeline.enqueue(user, idea_id=client.ideas.create(user_id=user, title=f"Kill test {n}").id, format="blog_post")
        for n in range(3)
    ]
    victim = start_worker(database_url, tmp_path, "--concurrency", "1", "--simulate-latency", "3")
    try:
        wait_for(
            lambda: (
                db.scalar("select count(*) from public.executions where user_id = %s and status = 'running'", (user,))
                == 1
            )
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    running = db.scalar("select id from public.executions where user_id = %s and status = 'running'", (user,))
    assert client.credits.balance(user).free_expansions_remaining == 2  # three held
    assert pipeline.reap(timedelta(seconds=0)) == [running]
    reaped = client.executions.get(running)
    assert (reaped.status, reaped.error_step) == (ExecutionStatus.FAILED, "timeout")
    assert client.credits.balance(user).free_expansions_remaining == 3  # its credit came back

    survivor = start_worker(database_url, tmp_path, "--concurrency", "2", "--exit-when-idle")
    output, _ = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, output
    statuses = Counter(client.executions.get(r.id).status for r in runs)
    print(
        "\nSIGKILL: 1 run reaped (timeout, credit released), "
        f"{statuses[ExecutionStatus.COMPLETED]} finished by a new worker"
    )
    assert statuses == {ExecutionStatus.FAILED: 1, ExecutionStatus.COMPLETED: 2}
    usage = client.credits.balance(user)
    assert (usage.free_expansions_remaining, usage.total_expansions_used) == (3, 2)


@pytest.mark.parametrize("workers", [4])
def test_four_worker_processes_drain_200_runs_exactly_once(
    client: IdeaExpansion, db: Db, database_url: str, tmp_path: Path, workers: int
) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider())
    queued: list[uuid.UUID] = []
    for u in range(20):
        user = client.users.create(email=f"drain-{u}-{uuid.uuid4().hex[:6]}@example.test").id
        client.credits.grant(user, 5, "5.00", f"DRAIN-{uuid.uuid4().hex[:10]}")
        for n in range(10):
            idea = client.ideas.create(user_id=user, title=f"Drain idea {u}-{n}").id
            queued.append(pipeline.enqueue(user, idea_id=idea, format="twitter_thread").id)
    started = time.monotonic()
    procs = [start_worker(database_url, tmp_path, "--concurrency", "2", "--exit-when-idle") for _ in range(workers)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    elapsed = time.monotonic() - started
    assert all(p.returncode == 0 for p in procs), outputs
    per_worker = [int(out.rsplit("after ", 1)[1].split(" ")[0]) for out in outputs]
    with db.admin() as conn:
        rows = conn.execute(
            "select e.status, e.worker_id, count(o.id) as outputs from public.executions e "
            "left join public.outputs o on o.execution_id = e.id where e.id = any(%s) group by e.id",
            (queued,),
        ).fetchall()
        charges = conn.execute(
            "select status, count(*) from public.credit_charges where idempotency_key = any(%s) group by status",
            (queued,),
        ).fetchall()
    print(f"\n{workers} worker processes drained {len(queued)} runs in {elapsed:.1f}s; runs per worker: {per_worker}")
    assert sum(per_worker) == 200
    assert len(rows) == 200
    assert all(status == "completed" and outputs == 1 for status, _, outputs in rows)
    assert dict(charges) == {"captured": 200}
