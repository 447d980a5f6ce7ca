"""`idea-expansion worker`: process queued expansions."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from types import FrameType
from typing import Annotated

import typer

from ..pipeline import OfflineProvider, Pipeline, start_forkserver
from ._common import DB_URL_HELP, command_errors, console, fail, open_client, safe
from ._logging import current_configuration


def worker_command(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Worker processes (use as many as there are cores).")
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", "-t", min=1, help="Runs each process handles at once (threads overlap waits on a model)."
        ),
    ] = 1,
    db_url: Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)] = None,
    exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="Stop once the queue is empty.")] = False,
    stale_after: Annotated[
        float,
        typer.Option("--stale-after", min=60, help="Seconds without a heartbeat before a run is reaped (>= 60)."),
    ] = 900.0,
    simulate_latency: Annotated[
        float, typer.Option("--simulate-latency", help="Offline provider only: seconds each model call waits.")
    ] = 0.0,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            "-p",
            help="offline, openai, anthropic, or a fallback list like openai,offline "
            "(instead of IDEA_EXPANSION_PROVIDER, for this worker).",
        ),
    ] = None,
) -> None:
    """Process queued expansions until interrupted (Ctrl-C or SIGTERM finishes the runs in hand, then stops;
    a second one stops at once and leaves the runs in hand to the reaper).

    --concurrency N runs N worker processes, each with --threads claim loops: N runs at a time scale
    with N cores; more threads only help while runs wait on a model. Any number of workers on any number
    of machines can share one database: each queued run is claimed exactly once (FOR UPDATE SKIP LOCKED),
    and runs whose worker died are reaped. A worker process that dies stops the others (exit code 1).

    Log lines (timestamped, on stderr) start at info here; see the global --log-level and --log-json.

    Example: idea-expansion worker --concurrency 2 --threads 4 --provider openai,offline
    """
    if simulate_latency and provider is not None and provider.strip() != "offline":
        fail("--simulate-latency is for the offline provider only")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # asked twice: stop now, leaving the runs in hand to the reaper
            raise KeyboardInterrupt
        stop.set()  # finish the runs in hand, then stop

    with command_errors():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if concurrency > 1:
            start_forkserver()  # before the client's pool threads exist: see start_forkserver
        with open_client(db_url) as client:
            settings = client.settings
            if provider is not None:
                # The client's own settings (its URL, keys, models), with this worker's providers.
                settings = settings.model_copy(update={"provider": provider})
            pipeline = Pipeline.from_settings(
                client,
                settings,
                provider=OfflineProvider(latency=simulate_latency) if simulate_latency else None,
                stale_after=timedelta(seconds=stale_after),
            )
            shape = f"{concurrency} process(es) x {threads} thread(s)"
            console.print(f"worker started ({shape}, provider {safe(pipeline.provider.name)})")
            with pipeline:
                done = pipeline.run_worker(
                    concurrency=concurrency,
                    threads_per_process=threads,
                    stop=stop,
                    exit_when_idle=exit_when_idle,
                    process_setup=current_configuration(),  # worker processes log as this one does
                )
            console.print(f"worker stopped after {done} run(s)")
