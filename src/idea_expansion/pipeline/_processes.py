"""Worker processes for `Pipeline.run_worker(concurrency=N)`.

Threads do not scale here: an offline run is Python and image work that holds the interpreter lock, so
N worker processes replace N threads. A child is never forked from the caller (which holds a connection
pool and threads): it starts from the forkserver (a clean process that has imported the SDK and what runs
render with, Pillow and markdown-it, once, so a child starts in milliseconds) or, where there is none, is
spawned. Either way the child imports the caller's main module as `__mp_main__`, as multiprocessing always
does: a script must keep its work under `if __name__ == "__main__":`. It rebuilds the client and the
pipeline from a picklable recipe the parent made (`ClientRecipe`, `PipelineRecipe`): settings, the
backend's own arguments (database URL, pool sizes, timeouts) or Supabase URL, storage folder, providers,
pipeline options.
What cannot be rebuilt (an injected backend, HTTP client or unpicklable provider) is refused with
`ConfigurationError` before anything starts.

Stopping keeps the thread worker's rule: a child stops claiming when told and finishes the runs in hand.
The parent's `stop` event, its interruption (Ctrl-C reaches every process of the terminal's group; a
child treats SIGINT and SIGTERM as "stop"), or the parent's death all tell every child. An interruption
of the parent after `stop` was set (or a second one) kills the children; their runs in hand are then
left to the reaper.
A child that dies (a non-zero exit, a signal) stops the others and is reported with `WorkerProcessError`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._client import IdeaExpansion
from .._exceptions import ConfigurationError, IdeaExpansionError, WorkerProcessError, WorkerThreadError
from .._settings import Settings

if TYPE_CHECKING:
    from .pricing import PriceTable
    from .providers import Provider as ModelProvider
    from .runner import ImageMode, ImageRenderer, Pipeline

__all__ = [
    "ClientRecipe",
    "PipelineRecipe",
    "RunCount",
    "WorkerProcessError",
    "WorkerThreadError",
    "client_recipe",
    "run_processes",
    "start_forkserver",
]

log = logging.getLogger("idea_expansion.pipeline")


@dataclass(frozen=True)
class ClientRecipe:
    """How to build, in another process, a service client equal to the parent's."""

    settings: Settings
    backend: Literal["postgres", "rest"]
    backend_arguments: dict[str, Any] = field(repr=False)  # the database URL holds its password
    """What the parent's backend was built with (`rebuild_arguments()`): URL, pool sizes, timeouts."""
    storage_dir: str | None

    def build(self) -> IdeaExpansion:
        from .. import PostgresBackend

        if self.backend == "postgres":
            backend = PostgresBackend(**self.backend_arguments)
            return IdeaExpansion(settings=self.settings, backend=backend, storage_dir=self.storage_dir)
        return IdeaExpansion(settings=self.settings, backend="rest", timeout=self.backend_arguments["timeout"])


@dataclass(frozen=True)
class PipelineRecipe:
    """How to build, in another process, a pipeline equal to the parent's."""

    client: ClientRecipe
    pipeline_class: type[Pipeline]
    provider: ModelProvider | None
    """A provider object, or None: the providers (and images) `provider_settings` name."""
    provider_settings: Settings | None
    image_mode: ImageMode
    """none, card or model (with `provider_settings`, what those settings chose in the parent)."""
    image_renderer: ImageRenderer | None
    """The image model's renderer (mode "model"); None otherwise, or what `provider_settings` choose."""
    prices: PriceTable | None
    """The price table (with `provider_settings`, read from them again)."""
    review_threshold: int
    github_api_url: str
    stale_after: timedelta
    heartbeat_every: timedelta

    def build(self, client: IdeaExpansion) -> Pipeline:
        provider, renderer, prices = self.provider, self.image_renderer, self.prices
        if self.provider_settings is not None:
            from .setup import image_renderer_from_settings, prices_from_settings, providers_from_settings

            provider = providers_from_settings(self.provider_settings)
            renderer = image_renderer_from_settings(self.provider_settings) if self.image_mode == "model" else None
            prices = prices_from_settings(self.provider_settings)
        return self.pipeline_class(
            client,
            provider=provider,
            image_mode=self.image_mode,
            image_renderer=renderer,
            prices=prices,
            review_threshold=self.review_threshold,
            github_api_url=self.github_api_url,
            stale_after=self.stale_after,
            heartbeat_every=self.heartbeat_every,
        )


@dataclass(frozen=True)
class LoopOptions:
    """What each worker process runs: `threads` claim loops, and when they end."""

    threads: int
    poll_interval: float
    exit_when_idle: bool
    max_runs: int | None
    worker_id: str | None
    process_setup: Callable[[], object] | None = None
    """Called first in each process (the log configuration, say): a fresh process inherits none of it."""


_ONLY_THREADS = "or run threads in this process instead: run_worker(concurrency=1, threads_per_process=N)"


def client_recipe(client: IdeaExpansion) -> ClientRecipe:
    """The recipe of a client that another process can rebuild: one the SDK built from settings, a URL
    and a storage folder. Raises `ConfigurationError` for an injected backend or HTTP client."""
    # The pipeline imports no backend module (the layer contract): the package's public names are the
    # same classes. Exact types only: a subclass may count or change calls, which a rebuild would lose.
    from .. import PostgresBackend, RestBackend

    backend, storage_root = client.backend, getattr(client.storage_backend, "root", None)
    if getattr(client.storage_backend, "injected_http_client", False):
        raise ConfigurationError(
            "this client reaches Supabase Storage through an HTTP client passed in (httpx_client), which a worker "
            f"process cannot rebuild: build it from settings to run worker processes, {_ONLY_THREADS}"
        )
    if type(backend) is PostgresBackend and isinstance(storage_root, Path):
        # What the backend was built with (DATABASE_URL may differ, and so may its pool and timeouts).
        return ClientRecipe(client.settings, "postgres", backend.rebuild_arguments(), str(storage_root))
    if type(backend) is RestBackend:
        supabase_url = (client.settings.supabase_url or "").rstrip("/")
        rest = backend.rebuild_arguments()
        if rest is not None and rest["url"] == supabase_url:
            return ClientRecipe(client.settings, "rest", rest, None)
        raise ConfigurationError(
            "this client sends through an HTTP client (or to a URL) passed in, which a worker process cannot "
            f"rebuild: build it from settings (SUPABASE_URL and keys) to run worker processes, {_ONLY_THREADS}"
        )
    raise ConfigurationError(
        f"this client uses a backend object passed in ({type(backend).__name__}), which a worker process "
        f"cannot rebuild: build the client with backend='postgres' or 'rest' to run worker processes, {_ONLY_THREADS}"
    )


def check_picklable(value: object, what: str) -> None:
    """Refuse, before any process starts, a part of the recipe that cannot be sent to a worker process."""
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise ConfigurationError(
            f"{what} cannot be sent to a worker process ({type(exc).__name__}: {exc}): use one defined at "
            f"module level and picklable, or Pipeline.from_settings, {_ONLY_THREADS}"
        ) from None


_PRELOAD = (f"{__package__}._preload",)


def _context() -> SpawnContext | ForkServerContext:
    # Never "fork": the caller holds a connection pool and threads, and a forked child would share them.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context: ForkServerContext = multiprocessing.get_context("forkserver")
        # The forkserver imports the SDK and what runs render with (Pillow, markdown-it) once, when it
        # starts; every child is a fork of that clean process and loads none of it again. (This setting
        # is the process's forkserver's.)
        context.set_forkserver_preload([__name__, *_PRELOAD])
        return context
    return multiprocessing.get_context("spawn")


def run_processes(recipe: PipelineRecipe, *, processes: int, options: LoopOptions, stop: threading.Event) -> int:
    """Run `processes` worker processes until they end; the runs they took, in total."""
    # Nothing the children share has a lock: a child killed while holding one would hang the others.
    # The stop signal is a pipe only the parent writes to (closing it, or dying, stops every child), and
    # each child counts its runs in its own slot of shared memory, which only it writes.
    if options.max_runs is not None:
        processes = min(processes, options.max_runs)  # a share of at least one run each
        if processes == 0:
            return 0
    context = _context()
    halt_reader, halt_writer = context.Pipe(duplex=False)
    taken: _Counts = context.RawArray("q", processes)
    children = [
        context.Process(
            target=_child_main,
            args=(recipe, options, index, processes, halt_reader, taken),
            name=f"expansion-worker-{index}",
            daemon=True,  # never outlive an interpreter that exits without joining them
        )
        for index in range(processes)
    ]
    started: list[BaseProcess] = []
    try:
        # While the children start, SIGINT and SIGTERM wait in this thread (a child inherits the mask and
        # lifts it once its own handlers are in place); the forkserver starts ignoring SIGINT.
        with _signals_held():
            _start_forkserver(context)
            for child in children:
                child.start()
                started.append(child)
        halt_reader.close()  # the children have theirs; the parent only writes
        died = _supervise(started, stop, halt_writer)
    except BaseException as exc:  # an interruption (or a failed start): the children finish their runs in hand
        halt_writer.close()
        if stop.is_set() and len(started) < len(children) and not isinstance(exc, KeyboardInterrupt):
            # Told to stop while starting: a Ctrl-C to the group can take a forkserver down as it starts
            # (outside `start_forkserver`). That is a stop, not a failure.
            _join_or_kill(started, now=False)
            return sum(taken[index] for index in range(processes))
        # Interrupted after being told to stop (a second Ctrl-C): stop now, the runs in hand are the reaper's.
        _join_or_kill(started, now=isinstance(exc, KeyboardInterrupt) and stop.is_set())
        raise
    finally:
        halt_writer.close()
    total = sum(taken[index] for index in range(processes))
    if died:
        described = "; ".join(f"process {index} {_exit_reason(code)}" for index, code in died.items())
        raise WorkerProcessError(
            f"worker {described}; the other processes finished their runs in hand and stopped "
            f"({total} run(s) taken in all)",
            processed=total,
            exit_codes=died,
        )
    return total


_HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM in this thread (they wait, and arrive once released) while processes start."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks (and no forkserver)
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_forkserver(context: SpawnContext | ForkServerContext) -> None:
    """Start the forkserver, ignoring SIGINT if that can be done without losing one meant for us.

    A Ctrl-C reaches the whole process group, and a forkserver still importing the SDK would die of it
    (and so every start after it). A new interpreter keeps an inherited "ignore", so the forkserver is
    started with SIGINT ignored, but only in a process with no other thread: SIGINT is held in this
    (main) thread meanwhile, and with no other thread to take it, one that arrives waits and reaches our
    handler afterwards. With other threads (a client's pool) it could be dropped there, so the
    forkserver starts as it is; `start_forkserver()` before building a client avoids that case."""
    if not isinstance(context, ForkServerContext):
        return
    from multiprocessing import forkserver

    alone = threading.current_thread() is threading.main_thread() and threading.active_count() == 1
    if not alone:
        forkserver.ensure_running()
        return
    with _signals_held():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)


def start_forkserver() -> None:
    """Start the worker processes' forkserver now, while this process has no other thread (call it
    before building a client): a Ctrl-C while the workers start then stops them cleanly."""
    _start_forkserver(_context())


def _supervise(children: list[BaseProcess], stop: threading.Event, halt: Connection) -> dict[int, int]:
    """Wait for the children, telling them to stop when `stop` is set or one of them dies."""
    pending = dict(enumerate(children))
    died: dict[int, int] = {}
    while pending:
        if stop.is_set():
            halt.close()
        wait([child.sentinel for child in pending.values()], timeout=0.1)
        for index, child in list(pending.items()):
            code = child.exitcode  # None while it runs
            if code is None:
                continue
            del pending[index]
            if code:
                log.error("worker process %d (pid %s) %s; stopping the others", index, child.pid, _exit_reason(code))
                died[index] = code
                halt.close()
    return died


def _join_or_kill(children: list[BaseProcess], *, now: bool) -> None:
    try:
        if not now:
            for child in children:
                child.join()
    except BaseException:  # interrupted again: stop now
        now = True
        raise
    finally:
        if now:  # the reaper takes the runs in hand
            for child in children:
                if child.is_alive():
                    child.kill()
            for child in children:
                child.join()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Counts(Protocol):
    """A shared array of 64-bit counts (`RawArray("q", n)`), one per worker process."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


class RunCount:
    """Runs taken by the claim loops of one process, under a lock they share (`max_runs` is checked
    and the slot reserved in one step)."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    @value.setter
    def value(self, value: int) -> None:
        self._value = value

    def get_lock(self) -> threading.Lock:
        return self._lock


class _Slot(RunCount):
    """A worker process's count, kept in its slot of the shared array, where the parent reads it."""

    def __init__(self, counts: _Counts, index: int) -> None:
        super().__init__()
        self._counts, self._index = counts, index

    @property
    def value(self) -> int:
        return int(self._counts[self._index])

    @value.setter
    def value(self, value: int) -> None:
        self._counts[self._index] = value


def _child_main(
    recipe: PipelineRecipe, options: LoopOptions, index: int, processes: int, halt: Connection, taken: _Counts
) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # finish the runs in hand, then exit

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)  # held by the parent while it started us
    threading.Thread(target=_watch_parent, args=(halt, stop), name="parent-watch", daemon=True).start()
    if options.process_setup is not None:
        options.process_setup()
    base = f"{options.worker_id}/{index}" if options.worker_id else f"{socket.gethostname()}:{os.getpid()}"
    max_runs = options.max_runs
    if max_runs is not None:  # this process's share: together exactly max_runs
        max_runs = max_runs // processes + (index < max_runs % processes)
    try:
        client = recipe.client.build()
    except IdeaExpansionError as exc:
        log.error("worker process %d could not start: %s", index, exc)
        raise SystemExit(1) from None
    with client, recipe.build(client) as pipeline:
        pipeline._work(
            threads=options.threads,
            base=base,
            stop=stop,
            taken=_Slot(taken, index),
            poll_interval=options.poll_interval,
            exit_when_idle=options.exit_when_idle,
            max_runs=max_runs,
            reaper=index == 0,  # one reaper per worker, as with threads
        )


def _watch_parent(halt: Connection, stop: threading.Event) -> None:
    """Stop once the parent closes the pipe: when it says so, or when it is gone (killed, say)."""
    wait([halt])
    stop.set()
