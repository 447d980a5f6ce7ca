"""Workers as separate processes: a worker killed with SIGKILL mid-run is reaped and its credit
released, and four worker processes drain 200 queued runs, each processed exactly once.

`run_worker(concurrency=N)` itself runs N processes: they really run at once (a rendezvous only all
of them together can pass) and take every queued run exactly once; stopping (the stop event, SIGTERM
or Ctrl-C on the CLI) finishes the runs in hand; a process that dies is reported and stops the others;
what a process cannot rebuild is refused. And the title card stays the same pixels, encoded cheaply."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from idea_expansion import ConfigurationError, ExecutionStatus, IdeaExpansion, PostgresBackend, Settings
from idea_expansion.local import SupabaseProject
from idea_expansion.pipeline import OfflineProvider, Pipeline, ProviderError
from idea_expansion.pipeline.providers.base import Completion, IdeaBrief, Task

from ._db import Db
from ._import_log import log_imports
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


def start_worker(database_url: str, storage: Path, *extra: str, own_group: bool = False) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "NEXT_PUBLIC_SUPABASE"))}
    env["IDEA_EXPANSION_STORAGE_DIR"] = str(storage)
    return subprocess.Popen(
        [sys.executable, "-m", "idea_expansion", "worker", "--db-url", database_url, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_group,  # its own process group, as a terminal's foreground job has
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


# -- run_worker(concurrency=N): worker processes ----------------------------------------------------------
T = TypeVar("T", bound=BaseModel)


class RendezvousProvider:
    """The offline provider, but a run's first call waits until `expected` different processes have each
    begun a run: only workers that really run at the same time get past it (threads of one process, or
    processes one after the other, wait in vain and their runs fail). Picklable: processes receive it."""

    name = "rendezvous-offline"

    def __init__(self, directory: Path, expected: int) -> None:
        self.directory, self.expected = directory, expected
        self.arrived = False  # each process (each copy) waits once, at its first run

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        if task == "judge" and not self.arrived:
            self.arrived = True
            (self.directory / str(os.getpid())).touch()
            deadline = time.monotonic() + 30
            while len(list(self.directory.iterdir())) < self.expected:
                if time.monotonic() > deadline:
                    raise ProviderError(f"only {len(list(self.directory.iterdir()))} process(es) ever ran a run")
                time.sleep(0.01)
        return OfflineProvider().generate(task, schema, idea=idea, instructions=instructions)


class ExitingProvider:
    """A provider that raises SystemExit, which no claim loop catches. Picklable: processes receive it."""

    name = "exiting"

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        raise SystemExit(0)


def queue_runs(client: IdeaExpansion, pipeline: Pipeline, runs: int) -> list[uuid.UUID]:
    """`runs` queued runs, blog posts, threads and images in turn, ten per user."""
    formats = ("blog_post", "twitter_thread", "image")
    queued: list[uuid.UUID] = []
    while len(queued) < runs:
        user = client.users.create(email=f"proc-{uuid.uuid4().hex[:10]}@example.test").id
        client.credits.grant(user, 10, "10.00", f"PROC-{uuid.uuid4().hex[:12]}")
        for _ in range(min(10, runs - len(queued))):
            idea = client.ideas.create(user_id=user, title=f"Process idea {len(queued)}").id
            queued.append(pipeline.enqueue(user, idea_id=idea, format=formats[len(queued) % 3]).id)
    return queued


def statuses(db: Db, runs: list[uuid.UUID]) -> Counter[str]:
    with db.admin() as conn:
        rows = conn.execute("select status from public.executions where id = any(%s)", (runs,)).fetchall()
    return Counter(row[0] for row in rows)


def running_workers(db: Db, runs: list[uuid.UUID]) -> list[str]:
    with db.admin() as conn:
        rows = conn.execute(
            "select worker_id from public.executions where id = any(%s) and status = 'running'", (runs,)
        ).fetchall()
    return [row[0] for row in rows]


def in_background(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `call` in a thread; its result or exception lands in the dict."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("processes", [2, 3])
def test_worker_processes_run_at_once_and_take_each_run_exactly_once(
    client: IdeaExpansion, db: Db, tmp_path: Path, processes: int
) -> None:
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    pipeline = Pipeline(client, provider=RendezvousProvider(arrivals, processes))
    queued = queue_runs(client, pipeline, 30)

    assert pipeline.run_worker(concurrency=processes, exit_when_idle=True) == 30

    with db.admin() as conn:
        rows = conn.execute(
            "select e.status, split_part(e.worker_id, '/', 1) as process, count(o.id) as outputs "
            "from public.executions e left join public.outputs o on o.execution_id = e.id "
            "where e.id = any(%s) group by e.id",
            (queued,),
        ).fetchall()
        charges = conn.execute(
            "select status, count(*) from public.credit_charges where idempotency_key = any(%s) group by status",
            (queued,),
        ).fetchall()
    assert len(rows) == 30
    assert all(status == "completed" and outputs == 1 for status, _, outputs in rows)
    assert dict(charges) == {"captured": 30}  # each run charged once: no run was taken twice
    pids = {int(name) for name in os.listdir(arrivals)}  # those that reached the rendezvous
    assert len(pids) == processes
    assert os.getpid() not in pids
    assert {int(process.rsplit(":", 1)[1]) for _, process, _ in rows} == pids


def test_max_runs_holds_for_all_worker_processes_together(client: IdeaExpansion, db: Db) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider())
    queued = queue_runs(client, pipeline, 9)
    assert pipeline.run_worker(concurrency=2, max_runs=5, exit_when_idle=True) == 5
    assert statuses(db, queued) == {"completed": 5, "queued": 4}


def test_a_stopped_worker_finishes_the_runs_in_hand_and_leaves_the_queue(client: IdeaExpansion, db: Db) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider(latency=0.3))  # a run takes about a second
    queued = queue_runs(client, pipeline, 12)
    stop = threading.Event()
    thread, outcome = in_background(lambda: pipeline.run_worker(concurrency=2, stop=stop, poll_interval=0.05))
    wait_for(lambda: len(running_workers(db, queued)) == 2)
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    done = outcome["result"]
    counts = statuses(db, queued)
    assert done >= 2
    assert counts == {"completed": done, "queued": 12 - done}  # none running, none failed, none lost


@pytest.mark.parametrize("how", ["SIGTERM to the worker", "Ctrl-C in its terminal"])
def test_a_signalled_cli_worker_finishes_the_runs_in_hand(
    client: IdeaExpansion, db: Db, database_url: str, tmp_path: Path, how: str
) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider())
    queued = queue_runs(client, pipeline, 12)
    worker = start_worker(
        database_url, tmp_path, "-c", "2", "--threads", "1", "--simulate-latency", "0.3", own_group=True
    )
    try:
        wait_for(lambda: len(running_workers(db, queued)) == 2, timeout=60)
        if how == "SIGTERM to the worker":
            worker.send_signal(signal.SIGTERM)  # the parent only: it tells its processes
        else:
            os.killpg(worker.pid, signal.SIGINT)  # the whole foreground group, as the terminal does
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == 0, output
    assert "2 process(es) x 1 thread(s)" in output
    done = int(output.rsplit("after ", 1)[1].split(" ")[0])
    assert done >= 2
    assert statuses(db, queued) == {"completed": done, "queued": 12 - done}


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_second_signal_stops_the_cli_worker_at_once_and_leaves_the_runs_to_the_reaper(
    client: IdeaExpansion, db: Db, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider())
    queued = queue_runs(client, pipeline, 4)
    worker = start_worker(database_url, tmp_path, "-c", "2", "--simulate-latency", "5", own_group=True)
    try:
        wait_for(lambda: len(running_workers(db, queued)) == 2, timeout=60)
        in_hand = running_workers(db, queued)
        worker.send_signal(signal.SIGTERM)  # finish the runs in hand (each takes 15 s here)...
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)  # ...no: stop now
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode != 0, output
    for name in in_hand:  # the worker processes were stopped with it
        wait_for(lambda name=name: gone(int(name.split("/")[0].rsplit(":", 1)[1])))
    assert statuses(db, queued) == {"running": 2, "queued": 2}
    assert sorted(map(str, pipeline.reap(timedelta(seconds=0)))) == sorted(
        str(r) for r in queued if client.executions.get(r).worker_id in in_hand
    )


def test_a_worker_process_that_dies_is_reported_and_stops_the_others(client: IdeaExpansion, db: Db) -> None:
    from idea_expansion.pipeline.runner import WorkerProcessError

    pipeline = Pipeline(client, provider=OfflineProvider(latency=0.3))
    queued = queue_runs(client, pipeline, 12)
    thread, outcome = in_background(lambda: pipeline.run_worker(concurrency=2, poll_interval=0.05))
    wait_for(lambda: len(running_workers(db, queued)) == 2)
    victim_worker = running_workers(db, queued)[0]
    victim = int(victim_worker.split("/")[0].rsplit(":", 1)[1])
    assert victim != os.getpid()  # a worker process, not this one
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()  # the parent did not hang on its dead child
    error = outcome["error"]
    assert isinstance(error, WorkerProcessError)
    assert list(error.exit_codes.values()) == [-signal.SIGKILL]
    assert "was killed by SIGKILL" in str(error)
    # The other process finished its run in hand; the dead one's run is the reaper's.
    counts = statuses(db, queued)
    assert counts["running"] == 1
    assert counts["failed"] == 0
    assert counts["completed"] >= 1
    assert counts["completed"] + counts["running"] == error.processed
    (left,) = [r for r in queued if client.executions.get(r).worker_id == victim_worker]
    assert pipeline.reap(timedelta(seconds=0)) == [left]


class CountingBackend(PostgresBackend):
    """A backend subclass (as benchmarks and tests make): a worker process could not rebuild what it adds."""

    calls = 0

    def rpc(self, request: Any, scope: Any) -> Any:
        type(self).calls += 1
        return super().rpc(request, scope)


def test_what_a_worker_process_cannot_rebuild_is_refused_and_threads_stay_possible(
    database_url: str, db: Db, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, DATABASE_URL=database_url)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend=CountingBackend(database_url), storage_dir=tmp_path) as counted:
        pipeline = Pipeline(counted, provider=OfflineProvider())
        queued = queue_runs(counted, pipeline, 4)
        with pytest.raises(ConfigurationError, match=r"CountingBackend.*threads_per_process"):
            pipeline.run_worker(concurrency=2, exit_when_idle=True)
        assert statuses(db, queued) == {"queued": 4}  # refused before any process started
        assert pipeline.run_worker(concurrency=1, threads_per_process=2, exit_when_idle=True) == 4
        assert statuses(db, queued) == {"completed": 4}

    class LocalProvider(OfflineProvider):  # defined in a function: no process can import it
        pass

    with (
        IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as plain,
        pytest.raises(ConfigurationError, match="provider LocalProvider"),
    ):
        Pipeline(plain, provider=LocalProvider()).run_worker(concurrency=2, exit_when_idle=True)


# -- the title card's PNG -----------------------------------------------------------------------------------
def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


@pytest.mark.parametrize(
    ("headline", "caption"),
    [
        ("Explain regular expressions", "A poster for the idea, with a caption long enough to wrap onto lines."),
        ("A much longer headline about building a command line tool that parses logs", "Short caption"),
    ],
)
def test_the_title_card_is_the_same_pixels_encoded_cheaply(headline: str, caption: str) -> None:
    from PIL import Image

    from idea_expansion.pipeline.formats import draw_title_card, render_title_card

    data = render_title_card(headline, caption)
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.verify()  # a valid PNG: chunk CRCs, structure
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "RGB", (1200, 630))
        assert decoded.tobytes() == draw_title_card(headline, caption).tobytes()  # lossless: the same pixels
    idat = b"".join(body for kind, body in png_chunks(data) if kind == b"IDAT")
    # zlib's header says how hard it compressed (FLEVEL): 3 is the slowest, what optimize=True used.
    assert idat[1] >> 6 < 3
    optimized = io.BytesIO()
    draw_title_card(headline, caption).save(optimized, format="PNG", optimize=True)
    assert len(data) <= 1.5 * len(optimized.getvalue())  # the size the cheaper encoding costs stays bounded


def test_a_ctrl_c_while_the_worker_processes_start_stops_cleanly(database_url: str, tmp_path: Path) -> None:
    """A Ctrl-C reaches every process of the terminal's group, the forkserver too, while it may still be
    importing the SDK: it must not die of it (a KeyboardInterrupt traceback and exit 1 before the fix)."""
    outcomes = []
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        worker = start_worker(database_url, tmp_path, "-c", "2", own_group=True)
        try:
            assert worker.stdout is not None
            worker.stdout.readline()  # "worker started ...": the processes are starting now
            time.sleep(delay)
            os.killpg(worker.pid, signal.SIGINT)
            output, _ = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
        outcomes.append((delay, worker.returncode, "KeyboardInterrupt" in output, output.strip().splitlines()[-1:]))
    assert all(code == 0 and not traceback for _, code, traceback, _ in outcomes), outcomes
    assert all(last == ["worker stopped after 0 run(s)"] for *_, last in outcomes), outcomes


def test_a_worker_process_builds_its_backend_as_the_parent_built_it(database_url: str, tmp_path: Path) -> None:
    """A backend passed in is rebuilt with all its arguments: the worker processes once got only the URL
    and timeout, so a 1.2 s statement timeout became 30 s and the pool its default size."""
    from idea_expansion.backends._base import Scope
    from idea_expansion.pipeline._processes import client_recipe

    backend = PostgresBackend(database_url, max_size=3, timeout=7.0, statement_timeout_ms=1234)
    with IdeaExpansion(settings=Settings(_env_file=None), backend=backend, storage_dir=tmp_path) as parent:  # type: ignore[call-arg]
        recipe = client_recipe(parent)
        with recipe.build() as child:
            assert isinstance(child.backend, PostgresBackend)
            assert child.backend.rebuild_arguments() == backend.rebuild_arguments()
            (row,) = child.backend.query("show statement_timeout", None, Scope("service_role"))
            assert row == {"statement_timeout": "1234ms"}


def test_a_negative_max_runs_is_refused(client: IdeaExpansion) -> None:
    from idea_expansion import InvalidRequestError

    pipeline = Pipeline(client, provider=OfflineProvider())
    for concurrency in (1, 2):
        with pytest.raises(InvalidRequestError, match="max_runs must be at least 0"):
            pipeline.run_worker(concurrency=concurrency, max_runs=-1, exit_when_idle=True)


def test_a_claim_loop_ended_by_what_it_does_not_catch_is_reported(client: IdeaExpansion, db: Db) -> None:
    """SystemExit(0) from a provider ended its thread silently: the process exited 0 and run_worker
    reported success, with runs left running for the reaper."""
    from idea_expansion.pipeline import WorkerProcessError, WorkerThreadError

    pipeline = Pipeline(client, provider=ExitingProvider())  # type: ignore[arg-type]
    queue_runs(client, pipeline, 4)
    with pytest.raises(WorkerThreadError, match="SystemExit"):
        pipeline.run_worker(concurrency=1, threads_per_process=2, exit_when_idle=True)
    with pytest.raises(WorkerProcessError, match="exited with code 1"):
        pipeline.run_worker(concurrency=2, exit_when_idle=True)


def test_worker_processes_log_as_the_command_line_configured(
    client: IdeaExpansion, database_url: str, tmp_path: Path
) -> None:
    """`--log-json worker -c 2`: the worker processes start fresh, yet each failed run is logged once, as
    a JSON line naming it (before, children logged plain lines, and the text repeated the run and stage)."""
    pipeline = Pipeline(client, provider=OfflineProvider())
    queued = queue_runs(client, pipeline, 4)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens once the socket closes: every model call fails
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "NEXT_PUBLIC_SUPABASE", "OPENAI_"))}
    env |= {
        "IDEA_EXPANSION_STORAGE_DIR": str(tmp_path),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{closed}/v1",
        "IDEA_EXPANSION_MODEL_MAX_RETRIES": "0",
    }
    result = subprocess.run(
        [
            *(sys.executable, "-m", "idea_expansion", "--log-json", "worker", "-c", "2", "--exit-when-idle"),
            *("--provider", "openai", "--db-url", database_url),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failures = [entry for entry in entries if entry.get("execution_id") in {str(run) for run in queued}]
    assert sorted(entry["execution_id"] for entry in failures) == sorted(map(str, queued)), result.stderr
    for entry in failures:
        assert (entry["level"], entry["stage"]) == ("WARNING", "judge")
        assert entry["message"].count(entry["execution_id"]) == 1, entry


def test_a_worker_process_starts_with_what_its_runs_render_with(client: IdeaExpansion, db: Db, tmp_path: Path) -> None:
    """Worker processes are forks of the forkserver, which imports what every run needs once. Markdown
    rendering was not among it: each worker process imported markdown-it on its first blog post, 25-30 ms
    of CPU per process start (benchmarks/workers.py)."""
    import functools

    pipeline = Pipeline(client, provider=OfflineProvider())
    queued = queue_runs(client, pipeline, 9)
    log = tmp_path / "imports.log"
    (tmp_path / "ie_import_probe.py").write_text("", encoding="utf-8")
    setup = functools.partial(log_imports, str(log), str(tmp_path))
    taken = pipeline.run_worker(concurrency=2, exit_when_idle=True, process_setup=setup)
    assert taken == 9
    assert statuses(db, queued) == Counter({"completed": 9})
    imported = log.read_text(encoding="utf-8").split()
    assert imported.count("ie_import_probe") == 2  # the log works, in both processes
    late = sorted({name for name in imported if name.split(".")[0] in {"markdown_it", "PIL", "mdurl"}})
    assert late == [], late
