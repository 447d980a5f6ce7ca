"""The expansion pipeline: judge -> choose format -> generate -> image -> persist -> deliver.

The database owns the run, and the pipeline reaches it only through `client.expansions`:

- `start` (or a worker's `claim`) holds one credit and fixes the run's idea, before any work;
- the work happens in memory: the judge's verdict, the format, the content, rendered images;
- `finish` captures the credit and stores the output (and blog post) in one transaction, or, for a
  failed run, releases it while keeping the judge's verdict;
- only then do user-visible side effects happen: images are uploaded to the user's storage folder and
  repositories pushed to GitHub. One that fails after the capture makes the run `partial` (charged once)
  and `deliver(output_id)` retries it without another charge.

Every model call is recorded (stage, task, the provider and model that answered, tokens, and whether it
fell back to the offline templates), with the sums and, given a price table, the cost. A run in which any
call fell back is never charged as a model run: it ends partial, its credit released (the database
enforces it), its output kept for its owner, and nothing of it is uploaded or published. Blog posts and
repositories are planned, drafted, reviewed against a rubric and revised at most once when the review
scores below `review_threshold` (see `prompts` and, for the most a run can spend, `budget`).

So an offline run costs two lifecycle calls (start or claim, and finish). Longer runs send a heartbeat
(`record_stage`) at a stage boundary, and before each model call and image render, once a minute has
passed since the last sign of life, so the reaper
never takes a live run; a watcher polling `expansions.status()` sees queued, then running, the stage of
the last heartbeat, then done. `on_progress` reports every stage in process.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, TypeVar, Unpack, get_args

import httpx
from pydantic import BaseModel

from .._exceptions import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    ConflictError,
    IdeaExpansionError,
    InvalidRequestError,
    NotFoundError,
    PipelineError,
)
from ..types import Execution, ExecutionStatus, Idea, Output, OutputFormat, Provider, Stage
from ..types.expansions import (
    STALE_AFTER,
    DeliveryStep,
    Evaluation,
    ExpansionOutcome,
    ExpansionResult,
    ExpansionStarted,
)
from ..types.ids import IdLike
from ..types.rows import ModelCall
from ._processes import (
    LoopOptions,
    PipelineRecipe,
    RunCount,
    WorkerProcessError,
    WorkerThreadError,
    check_picklable,
    client_recipe,
    run_processes,
)
from .budget import IMAGE_PROMPT_CHARS
from .content import (
    BlogDraft,
    BlogPostContent,
    FormatDecision,
    GitHubRepoContent,
    ImageContent,
    ImageDraft,
    JudgeVerdict,
    OutputContent,
    PlanDraft,
    RepoDraft,
    ReviewVerdict,
    StoredImage,
    ThreadDraft,
)
from .formats import build_blog_post, build_repo, build_thread, render_title_card
from .github import API as GITHUB_API
from .github import GitHubPublisher, PublishError, PublishResult, github_http_client
from .prompts import (
    CHOOSE_FORMAT_WITHOUT_IMAGES,
    INSTRUCTIONS,
    PLANNED_FORMATS,
    draft_instructions,
    plan_instructions,
    review_instructions,
)
from .providers import Completion, IdeaBrief, OfflineProvider, ProviderError, Task
from .providers import Provider as ModelProvider
from .providers.base import FailedCall, RenderedImage

if TYPE_CHECKING:
    from .._client import IdeaExpansion
    from .._settings import Settings
    from ..types.expansions import ExpansionStatus
    from .pricing import PriceTable

__all__ = [
    "DEFAULT_REVIEW_THRESHOLD",
    "HEARTBEAT_EVERY",
    "INSTRUCTIONS",
    "STALE_AFTER",
    "ImageMode",
    "ImageRenderer",
    "Pipeline",
    "ProgressCallback",
    "WorkerProcessError",
    "WorkerThreadError",
]

log = logging.getLogger("idea_expansion.pipeline")
T = TypeVar("T", bound=BaseModel)
ProgressCallback = Callable[[Stage, uuid.UUID], None]
_MOST_WORKERS = 1024
"""The most worker processes, and the most claim loops per process, one `run_worker` starts."""
HEARTBEAT_EVERY = timedelta(minutes=1)
"""A running run reports its stage (its heartbeat) at a stage boundary, or before a model call or image
render, once this long has passed."""
ImageRenderer = Callable[[ImageDraft], RenderedImage]
"""Makes a PNG for a draft with an image model (`image_mode="model"`): the picture and who made it."""
ImageMode = Literal["none", "card", "model"]
"""none: no images (image runs refused, blog posts without a cover); card: the offline title card; model:
an image model (`image_renderer`)."""
DEFAULT_REVIEW_THRESHOLD = 70
"""A model review scoring a draft below this asks for the one revision."""


class RunOptions(TypedDict, total=False):
    """What `Pipeline.from_settings` (and `AsyncPipeline`) take in place of the settings' own: each given
    replaces the setting. An image mode given alone has no renderer; a renderer given alone is mode model."""

    image_mode: ImageMode
    image_renderer: ImageRenderer | None
    prices: PriceTable | None
    review_threshold: int


def checked_run_options(
    image_mode: ImageMode | None, image_renderer: ImageRenderer | None, review_threshold: int
) -> ImageMode:
    """The image mode these options make (by default "model" with a renderer, else "card"), or
    `ConfigurationError` / `InvalidRequestError` for options no run can use."""
    mode: ImageMode = image_mode or ("model" if image_renderer is not None else "card")
    if mode not in get_args(ImageMode):
        raise ConfigurationError(f"image_mode must be none, card or model, not {image_mode!r}")
    if (mode == "model") != (image_renderer is not None):
        raise ConfigurationError(
            "image_mode 'model' needs an image_renderer"
            if mode == "model"
            else f"an image_renderer is used only with image_mode 'model', not {mode!r}"
        )
    if not _whole_number(review_threshold) or not 0 <= review_threshold <= 100:
        raise InvalidRequestError(f"review_threshold must be from 0 to 100, not {review_threshold!r}")
    return mode


TITLE_CARD_PROVIDER, TITLE_CARD_MODEL = "offline", "title-card"
_DRAFTS: dict[OutputFormat, type[BaseModel]] = {
    OutputFormat.BLOG_POST: BlogDraft,
    OutputFormat.TWITTER_THREAD: ThreadDraft,
    OutputFormat.GITHUB_REPO: RepoDraft,
    OutputFormat.IMAGE: ImageDraft,
}


@dataclass
class _Run:
    """What a run has learned so far, in memory until `finish` records it."""

    execution: Execution
    idea: Idea
    last_beat: float
    calls: list[ModelCall] = field(default_factory=list)
    review_score: int | None = None
    evaluation: Evaluation | None = None
    format_chosen: OutputFormat | None = None
    format_reasoning: str | None = None
    soft_errors: list[tuple[Stage, str]] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    """Rendered images, stored only after the capture."""
    github_token: str | None = None

    @property
    def tokens(self) -> int:
        return sum(call.tokens for call in self.calls)

    @property
    def fell_back(self) -> bool:
        return any(call.fallback for call in self.calls)

    def add(self, completion: Completion[Any], stage: Stage, task: Task, asked: str) -> None:
        """The calls that failed before the answer, then the answer (by `asked`, the provider called, when
        the completion does not name who answered). Only a draft answered offline after a model failed is a
        fallback (the run's content is the templates'): a judge, format choice, plan or review answered so
        keeps its errors and changes nothing, or a model-written run would be free whenever an idea talks
        the reviewer out of its schema."""
        self.add_failed(completion.failed_calls, stage, task)
        errors = [_storable(error, 500) for error in completion.fallback_errors[:8]]
        self._record(
            stage,
            task,
            completion.provider or asked,
            completion.model,
            completion.input_tokens,
            completion.output_tokens,
            fallback=completion.fell_back_to_offline and stage == Stage.GENERATE and task in _CONTENT_TASKS,
            # Kept whoever answered: a model answering after another failed is recorded with why.
            fallback_errors=errors or None,
            usage_reported=completion.usage_reported,
        )

    def add_failed(self, failed: Sequence[FailedCall], stage: Stage, task: Task) -> None:
        for call in failed:
            self._record(
                stage,
                task,
                call.provider,
                call.model,
                call.input_tokens,
                call.output_tokens,
                failed=True,
                error=_storable(call.error or "failed", 500),
                usage_reported=call.usage_reported,
            )

    def add_image(self, image: RenderedImage) -> None:
        self._record(Stage.IMAGE, "image", image.provider, image.model, image.input_tokens, image.output_tokens)

    def _record(
        self,
        stage: Stage,
        task: Task,
        provider: object,
        model: object,
        input_tokens: object,
        output_tokens: object,
        **details: Any,
    ) -> None:
        """A call as the record holds it, whatever its provider or server sent: names made storable, token
        counts bounded (see `_storable`, `_bounded_tokens`)."""
        self.calls.append(
            ModelCall(
                stage=stage.value,
                task=task,
                provider=_storable(provider or "unknown", 64),
                model=_storable(model or "unknown", 200),
                input_tokens=_bounded_tokens(input_tokens),
                output_tokens=_bounded_tokens(output_tokens),
                **details,
            )
        )


class Pipeline:
    """Runs expansions for a service client: `Pipeline(client, provider=OfflineProvider())`, or
    `Pipeline.from_settings(client)` for the providers, image mode, prices and review threshold the
    settings name. It owns one HTTP client for GitHub: close the pipeline (or use it as a context manager)
    when done.

    Args:
        image_mode: "none", "card" (the offline title card) or "model" (`image_renderer`); by default
            "model" when a renderer is given, else "card".
        image_renderer: Renders pictures with an image model (image mode "model").
        prices: The price table the runs' cost is computed with (None: no cost recorded).
        review_threshold: A model review below this (0-100) asks for the one revision.
    """

    def __init__(
        self,
        client: IdeaExpansion,
        *,
        provider: ModelProvider | None = None,
        image_mode: ImageMode | None = None,
        image_renderer: ImageRenderer | None = None,
        prices: PriceTable | None = None,
        review_threshold: int = DEFAULT_REVIEW_THRESHOLD,
        github_http: httpx.Client | None = None,
        github_api_url: str = GITHUB_API,
        stale_after: timedelta | None = None,
        heartbeat_every: timedelta = HEARTBEAT_EVERY,
    ) -> None:
        _check_service_client(client)
        mode = checked_run_options(image_mode, image_renderer, review_threshold)
        # Checked now: a bad period found mid-run would fail every run, each after holding a credit.
        for name, period in (("stale_after", stale_after), ("heartbeat_every", heartbeat_every)):
            if period is not None and (not isinstance(period, timedelta) or period < timedelta(0)):
                raise InvalidRequestError(f"{name} must be a non-negative timedelta, not {period!r}")
        self._client = client
        self.provider: ModelProvider = provider or OfflineProvider()
        self.image_mode: ImageMode = mode
        self._render_image: ImageRenderer | None = image_renderer
        self.prices = prices
        self.review_threshold = review_threshold
        self._github_http = github_http
        self._owns_github_http = github_http is None
        self._github_lock = threading.Lock()
        self._github_api = github_api_url
        self.stale_after = stale_after or STALE_AFTER
        self.heartbeat_every = heartbeat_every
        self._provider_settings: Settings | None = None
        """The settings the providers were chosen from (`from_settings`): worker processes choose again."""

    @classmethod
    def from_settings(
        cls,
        client: IdeaExpansion,
        settings: Settings | None = None,
        *,
        provider: ModelProvider | None = None,
        stale_after: timedelta | None = None,
        **options: Unpack[RunOptions],
    ) -> Pipeline:
        """The pipeline the settings (by default the client's) describe: IDEA_EXPANSION_PROVIDER's
        providers, IDEA_EXPANSION_IMAGE_MODE's images, IDEA_EXPANSION_PRICES and the review threshold. An
        explicit `provider` replaces the providers (and an image model: images are then title cards);
        `options` (`RunOptions`) replace the image mode, renderer, prices and threshold they name."""
        from .setup import (
            image_mode_from_settings,
            image_renderer_from_settings,
            prices_from_settings,
            providers_from_settings,
        )

        _check_service_client(client)
        settings = settings or client.settings
        mode: ImageMode | None
        if "image_mode" in options or "image_renderer" in options:
            mode, renderer = options.get("image_mode"), options.get("image_renderer")
        else:
            mode = image_mode_from_settings(settings)
            if provider is not None and mode == "model":
                mode = "card"
            renderer = image_renderer_from_settings(settings) if mode == "model" else None
        pipeline = cls(
            client,
            provider=provider or providers_from_settings(settings),
            image_mode=mode,
            image_renderer=renderer,
            prices=options["prices"] if "prices" in options else prices_from_settings(settings),
            review_threshold=options.get("review_threshold", settings.review_threshold),
            stale_after=stale_after,
        )
        # A model client cannot be sent to a worker process, but the settings that made it can.
        pipeline._provider_settings = None if provider else settings
        return pipeline

    # -- lifetime ---------------------------------------------------------------------------------------
    @property
    def github_http(self) -> httpx.Client:
        """The one HTTP client every GitHub publish of this pipeline goes through (made on first use)."""
        with self._github_lock:
            if self._github_http is None:
                self._github_http = github_http_client()
            return self._github_http

    def close(self) -> None:
        """Close the GitHub HTTP client this pipeline made (one passed in stays the caller's to close)."""
        with self._github_lock:
            if self._owns_github_http and self._github_http is not None:
                self._github_http.close()
                self._github_http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- public API -------------------------------------------------------------------------------------
    def expand(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        idempotency_key: IdLike | None = None,
        public: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> ExpansionResult:
        """Run one expansion now and return it once finished (completed or partial).

        Args:
            idea_id: The idea to expand; by default the user's most promising pending idea.
            format: Force a format; by default the provider chooses.
            idempotency_key: A retry with the same key returns the same run, never a second one.
            public: Make a resulting blog post public; posts are private by default.
            on_progress: Called with each stage as the run enters it.

        Raises:
            InsufficientCreditsError: the user has no credit (nothing is generated).
            PipelineError: the run failed; it is recorded as failed and its credit released.
            InvalidRequestError / NotFoundError: a bad format, or an idea that is not the user's or not pending.
            ConfigurationError: an image run where images cannot be made or stored (image mode "none", or
                no storage); refused before any credit is held.
        """
        self.check_format(format)
        started = self._client.expansions.start(
            user_id,
            idea_id=idea_id,
            format=None if format is None else str(format),
            idempotency_key=idempotency_key,
            public=public,
        )
        if not started.created:  # a retry with the same key: report that run, never run it a second time
            return self._replayed(started.execution)
        return self._execute(started, on_progress)

    def enqueue(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        idempotency_key: IdLike | None = None,
        public: bool = False,
    ) -> Execution:
        """Queue an expansion for the workers. Its credit is held and its idea fixed now, so queueing
        beyond the balance is refused with `InsufficientCreditsError` just as running would be, and an
        image run where images cannot be made or stored with `ConfigurationError`, before any credit is held."""
        self.check_format(format)
        return self._client.expansions.enqueue(
            user_id,
            idea_id=idea_id,
            format=None if format is None else str(format),
            idempotency_key=idempotency_key,
            public=public,
        )

    @property
    def images_available(self) -> bool:
        """Whether runs can make and store images: an image mode other than "none", and storage that works."""
        return self.image_mode != "none" and _storage_available(self._client)

    def check_format(self, format: OutputFormat | str | None) -> None:
        """Refuse, with `ConfigurationError`, a format this pipeline cannot make here (an image run where
        images cannot be made or stored), before any credit is held."""
        if format is not None and str(format) == OutputFormat.IMAGE.value and not self.images_available:
            why = 'the image mode is "none"' if self.image_mode == "none" else "no file storage is available"
            raise ConfigurationError(f"image runs are off here: {why}; ask for another format (nothing was charged)")

    def status(self, execution_id: IdLike) -> ExpansionStatus:
        """Where a run is: status, stage, its outputs and its error if any."""
        return self._client.expansions.status(execution_id)

    def reap(self, stale_after: timedelta | None = None) -> list[uuid.UUID]:
        """Fail running executions whose worker stopped (no heartbeat) and release their credits."""
        reaped = self._client.expansions.reap(stale_after if stale_after is not None else self.stale_after)
        if reaped:
            log.warning("reaped %d stale execution(s): %s", len(reaped), ", ".join(map(str, reaped)))
        return reaped

    def run_worker(
        self,
        *,
        concurrency: int = 1,
        threads_per_process: int = 1,
        poll_interval: float = 0.5,
        stop: threading.Event | None = None,
        exit_when_idle: bool = False,
        max_runs: int | None = None,
        worker_id: str | None = None,
        process_setup: Callable[[], object] | None = None,
    ) -> int:
        """Process queued expansions until `stop` is set (or the queue is empty, with `exit_when_idle`).
        Any number of workers, in any number of processes and machines, may share a database: each queued
        run is claimed exactly once. Setting `stop` (or Ctrl-C / SIGTERM on a worker process) finishes the
        runs in hand, then stops; a run whose worker dies mid-run is left to the reaper.

        Args:
            concurrency: Worker processes. With more than one, each starts fresh (never forked from this
                process) and builds its own client and pipeline from this one's settings, database URL,
                storage folder, providers and options; with one, the work runs here, in this process.
            threads_per_process: Claim loops per process. Threads overlap waits (a model's answer) but
                not Python work, which holds the interpreter lock: processes are what scale with cores.
            max_runs: At most this many runs, in all processes together.
            process_setup: Called first in each worker process (with `concurrency` > 1), before its client
                is built: what a fresh process needs that it cannot inherit, such as the log configuration
                (`functools.partial(logging.basicConfig, level=logging.INFO)`). It must be picklable.

        Returns:
            How many runs this worker took (in all its processes).

        Raises:
            InvalidRequestError: a count below its minimum, or not a whole number; a poll_interval that
                is not 0 to 86400 seconds.
            ConfigurationError: `concurrency` > 1 but this pipeline cannot be rebuilt in another process
                (a backend, HTTP client or provider object passed in that cannot be sent there); run
                threads in this process instead: `run_worker(concurrency=1, threads_per_process=N)`.
            WorkerProcessError: a worker process died; the others finished their runs in hand and stopped.
            WorkerThreadError: (threads in this process) a claim loop ended on what it does not catch.
        """
        for name, count in (("concurrency", concurrency), ("threads_per_process", threads_per_process)):
            # Bounded: a huge count would exhaust memory making threads (or fail with RuntimeError:
            # can't start new thread) before any run.
            if not _whole_number(count) or not 1 <= count <= _MOST_WORKERS:
                raise InvalidRequestError(f"{name} must be from 1 to {_MOST_WORKERS}, not {count!r}")
        if max_runs is not None and (not _whole_number(max_runs) or max_runs < 0):
            raise InvalidRequestError(f"max_runs must be at least 0 (or None for no limit), not {max_runs!r}")
        if stop is not None and not all(callable(getattr(stop, name, None)) for name in ("is_set", "set", "wait")):
            raise InvalidRequestError(f"stop must be a threading.Event, not {type(stop).__name__}")
        if process_setup is not None and not callable(process_setup):
            raise InvalidRequestError(f"process_setup must be callable, not {type(process_setup).__name__}")
        is_number = _whole_number(poll_interval) or isinstance(poll_interval, float)
        if not is_number or not 0 <= poll_interval <= 86_400:  # NaN fails too; an infinite wait would overflow
            raise InvalidRequestError(f"poll_interval must be 0 to 86400 seconds, not {poll_interval!r}")
        stop = stop or threading.Event()
        if concurrency == 1:
            taken = RunCount()
            self._work(
                threads=threads_per_process,
                base=worker_id or f"{socket.gethostname()}:{os.getpid()}",
                stop=stop,
                taken=taken,
                poll_interval=poll_interval,
                exit_when_idle=exit_when_idle,
                max_runs=max_runs,
                reaper=True,
            )
            return taken.value
        if process_setup is not None:
            check_picklable(process_setup, "process_setup")
        options = LoopOptions(threads_per_process, poll_interval, exit_when_idle, max_runs, worker_id, process_setup)
        return run_processes(self._worker_recipe(), processes=concurrency, options=options, stop=stop)

    def _work(
        self,
        *,
        threads: int,
        base: str,
        stop: threading.Event,
        taken: RunCount,
        poll_interval: float,
        exit_when_idle: bool,
        max_runs: int | None,
        reaper: bool,
    ) -> None:
        """`threads` claim loops in this process, counting the runs they take in `taken`; `max_runs` is
        this process's share (worker processes split the caller's between them)."""

        def loop(index: int) -> None:
            name = f"{base}/{index}"
            last_reap = 0.0
            failures = 0
            while not stop.is_set():
                try:
                    if reaper and index == 0 and time.monotonic() - last_reap > 30:
                        last_reap = time.monotonic()
                        self.reap()
                    with taken.get_lock():
                        if max_runs is not None and taken.value >= max_runs:
                            return
                        taken.value += 1  # reserve the slot before claiming
                    try:
                        claimed = self._claim(name)
                    except BaseException:
                        with taken.get_lock():
                            taken.value -= 1
                        raise
                    failures = 0
                except Exception:  # a database blip must not silently kill the worker thread
                    failures += 1
                    log.exception("worker %s could not claim or reap (attempt %d); retrying", name, failures)
                    stop.wait(min(30.0, poll_interval * 2**failures))
                    continue
                if claimed is None:
                    with taken.get_lock():
                        taken.value -= 1
                    if exit_when_idle:
                        return
                    stop.wait(poll_interval)
                    continue
                try:
                    self._execute(claimed, None)
                except PipelineError as exc:
                    # The error already names the run and the stage; `extra` carries them for JSON logs.
                    log.warning("%s", exc, extra={"execution_id": str(exc.execution_id), "stage": str(exc.stage)})
                except Exception:  # a run must never take its worker thread down with it
                    log.exception("execution %s ended with an unexpected error", claimed.execution.id)

        died: list[tuple[int, BaseException]] = []

        def guarded(index: int) -> None:
            # What `loop` does not catch (SystemExit, say, from a provider) ends this loop: the others
            # finish their runs in hand and stop, and the caller hears of it instead of a silent thread.
            try:
                loop(index)
            except BaseException as exc:
                died.append((index, exc))
                stop.set()

        # Daemon threads: a caller interrupted twice exits without them; their runs in hand are the reaper's.
        workers = [
            threading.Thread(target=guarded, args=(i,), name=f"expansion-worker-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in workers:
            thread.start()
        try:
            for thread in workers:
                thread.join()
        except BaseException:  # interrupted (Ctrl-C): the threads finish their runs in hand, then stop
            told_before = stop.is_set()
            stop.set()
            if not told_before:  # unless this is the second time of asking
                for thread in workers:
                    thread.join()
            raise
        if died:
            index, exc = died[0]
            raise WorkerThreadError(f"worker {base}/{index} stopped on {exc!r}; the others were stopped") from exc

    def _worker_recipe(self) -> PipelineRecipe:
        """What a worker process needs to build this pipeline again; refuses what it cannot rebuild."""
        if self._github_http is not None and not self._owns_github_http:
            raise ConfigurationError(
                "this pipeline publishes through a GitHub HTTP client passed in, which a worker process cannot "
                "rebuild: run threads in this process instead: run_worker(concurrency=1, threads_per_process=N)"
            )
        from_settings = self._provider_settings is not None
        recipe = PipelineRecipe(
            client=client_recipe(self._client),
            pipeline_class=type(self),
            provider=None if from_settings else self.provider,
            provider_settings=self._provider_settings,
            image_mode=self.image_mode,
            image_renderer=None if from_settings else self._render_image,
            prices=None if from_settings else self.prices,
            review_threshold=self.review_threshold,
            github_api_url=self._github_api,
            stale_after=self.stale_after,
            heartbeat_every=self.heartbeat_every,
        )
        check_picklable(recipe.pipeline_class, f"the pipeline class {type(self).__qualname__}")
        check_picklable(recipe.provider, f"the provider {type(self.provider).__name__}")
        check_picklable(recipe.image_renderer, "the image renderer")
        check_picklable(recipe.prices, "the price table")
        check_picklable(recipe.client.settings, "the client's settings")
        return recipe

    def publish(self, output_id: IdLike) -> Output:
        """Publish (again) a generated repository whose publishing failed; no credit is charged.

        Raises:
            PublishError: GitHub refused; NotFoundError: no such output or no GitHub credential;
            InvalidRequestError: the output is not a repository.
        """
        output = self._client.outputs.get(output_id)
        if output.format != OutputFormat.GITHUB_REPO:
            raise InvalidRequestError(f"only github_repo outputs are published, not {output.format}")
        return self.deliver(output.id)

    def deliver(self, output_id: IdLike) -> Output:
        """Retry, without another charge, what failed after a run's capture: store its lost images again
        (re-rendered from the stored drafts by the renderer recorded for them: the title card for a card,
        the image model only for a model's picture) and publish a repository that is not published yet.

        Raises:
            ConflictError: the run was never charged (it fell back to the offline templates): nothing of
                it is delivered.
            ConfigurationError: a model's picture is lost and this pipeline has no image model.
            ProviderError: the redrawn picture is not the size recorded (nothing is stored).
        """
        output = self._client.outputs.get(output_id)
        content = output.content
        execution = self._client.executions.get(output.execution_id)
        if not execution.charged:
            raise ConflictError(
                f"execution {execution.id} was not charged (generation {execution.generation}): its output is "
                "kept for its owner and never delivered; run it again with a working model",
                code="PT409",
            )
        if isinstance(content, GitHubRepoContent):
            if output.published:
                return output
            published = self._publisher(output.user_id).publish(content, private=not execution.make_public)
            recorded = self._record_publication(output.execution_id, published)
            if recorded is None or recorded.output is None:
                raise PublishError(f"published at {published.url}, but recording it failed; see the log")
            return recorded.output
        rendered = [call for call in execution.model_calls if call.stage == Stage.IMAGE.value and not call.failed]
        by_model = bool(rendered) and rendered[-1].model != TITLE_CARD_MODEL
        for stored, draft in _images_of(content):
            if not self._stored(stored.storage_path):
                self._redraw(stored, draft, by_model=by_model)
        return output

    def _stored(self, path: str) -> bool:
        try:
            self._client.storage.download(path)
        except NotFoundError:
            return False
        return True

    def _redraw(self, stored: StoredImage, draft: ImageDraft, *, by_model: bool) -> None:
        """Store a lost picture again, drawn by the renderer recorded for it (the title card for a card, the
        image model only for a model's picture), at the size recorded."""
        image = self._draw(draft, model=by_model)
        if (image.width, image.height) != (stored.width, stored.height):
            raise ProviderError(
                f"the redrawn {stored.storage_path} is {image.width}x{image.height}, not the "
                f"{stored.width}x{stored.height} recorded; nothing was stored"
            )
        self._client.storage.upload(stored.storage_path, image.data, content_type=stored.mime_type, upsert=True)

    # -- a run ------------------------------------------------------------------------------------------
    def _claim(self, worker: str) -> ExpansionStarted | None:
        return self._client.expansions.claim(worker)

    def _replayed(self, execution: Execution) -> ExpansionResult:
        if execution.status == ExecutionStatus.FAILED:
            raise PipelineError(
                f"expansion {execution.id} failed at {execution.error_step}: {execution.error_message}",
                execution_id=execution.id,
                stage=execution.error_step or "unknown",
            )
        status = self._client.expansions.status(execution.id)
        output = self._client.outputs.get(status.output_ids[0]) if status.output_ids else None
        return ExpansionResult(execution=status.execution, output=output)

    def _execute(self, started: ExpansionStarted, on_progress: ProgressCallback | None) -> ExpansionResult:
        execution = started.execution
        stage = Stage.SELECT
        run: _Run | None = None
        try:
            if started.idea is None:
                raise NotFoundError("the run's idea no longer exists", code="PT404")
            run = _Run(execution, started.idea, last_beat=time.monotonic())
            self._enter(run, stage, on_progress)

            stage = Stage.JUDGE
            self._enter(run, stage, on_progress)
            verdict = self._ask("judge", JudgeVerdict, run, stage)
            run.evaluation = Evaluation(score=verdict.score, reasoning=_storable(verdict.reasoning, REASONING_CHARS))

            stage = Stage.CHOOSE_FORMAT
            self._enter(run, stage, on_progress)
            chosen = self._choose_format(run)

            stage = Stage.GENERATE
            self._enter(run, stage, on_progress)
            content, draft = self._generate(run, chosen)

            if chosen == OutputFormat.IMAGE or (chosen == OutputFormat.BLOG_POST and self._covers(run)):
                stage = Stage.IMAGE
                self._enter(run, stage, on_progress)
                content = self._render(run, chosen, content, draft)
            if chosen == OutputFormat.GITHUB_REPO and not run.fell_back:
                run.github_token = self._github_token(run)  # a read; the push waits for the capture

            assert not isinstance(content, ImageDraft), "the image stage turns an image draft into content"
            stage = Stage.PERSIST
            self._enter(run, stage, on_progress)
            finished = self._finish(execution.id, self._outcome(run, content))
        except Exception as exc:  # every failure is recorded; the caller gets a PipelineError
            message = _describe(exc)
            self._fail(execution, run, stage, message)
            raise PipelineError(
                f"expansion {execution.id} failed at {stage}: {message}", execution_id=execution.id, stage=stage
            ) from exc
        return self._deliver(run, finished, on_progress)

    def _finish(self, execution_id: uuid.UUID, outcome: ExpansionOutcome) -> ExpansionResult:
        """`finish`, asked once more when its answer is lost: the capture may have committed, and the
        database answers a repeated finish with the same status by returning what it stored, so a charged
        run is never reported failed (nor left undelivered) for a dropped connection."""
        try:
            return self._client.expansions.finish(execution_id, outcome)
        except APIConnectionError as exc:  # a timeout too (APITimeoutError is one)
            log.warning("finishing %s: %s; asking again", execution_id, exc)
            return self._client.expansions.finish(execution_id, outcome)

    def _enter(self, run: _Run, stage: Stage, on_progress: ProgressCallback | None) -> None:
        # start/claim put the run in `select` with a fresh heartbeat; later stages only beat when due.
        if stage != Stage.SELECT:
            self._beat(run, stage)
        if on_progress is not None:
            on_progress(stage, run.execution.id)

    def _beat(self, run: _Run, stage: Stage) -> None:
        """The heartbeat (`record_stage`), once `heartbeat_every` has passed since the last: at each stage
        boundary and before every model call and image render, so no run of many slow calls in one stage
        (plan, draft, review, revision, review) goes quiet long enough for the reaper to take it."""
        if time.monotonic() - run.last_beat >= self.heartbeat_every.total_seconds():
            self._client.expansions.record_stage(run.execution.id, stage)
            run.last_beat = time.monotonic()

    def _choose_format(self, run: _Run) -> OutputFormat:
        forced = run.execution.requested_format
        if forced is not None:
            if forced == OutputFormat.IMAGE and not self.images_available:  # queued before images went off
                raise ConfigurationError("image runs are off here (image mode none, or no file storage)")
            run.format_chosen, run.format_reasoning = forced, "Requested by the caller."
            return forced
        images = self.images_available
        instructions = INSTRUCTIONS["choose_format"] if images else CHOOSE_FORMAT_WITHOUT_IMAGES
        decision = self._ask("choose_format", FormatDecision, run, Stage.CHOOSE_FORMAT, instructions)
        run.format_chosen, run.format_reasoning = decision.format, _storable(decision.reasoning, REASONING_CHARS)
        if decision.format == OutputFormat.IMAGE and not images:  # the chooser never picks what cannot be made
            run.format_chosen = OutputFormat.BLOG_POST
            run.format_reasoning = f"{run.format_reasoning} (Images are off here, so a blog post instead.)"
        return run.format_chosen

    def _generate(self, run: _Run, chosen: OutputFormat) -> tuple[OutputContent | ImageDraft, BaseModel]:
        if chosen in PLANNED_FORMATS:
            draft: BaseModel = self._planned_draft(run, chosen)
        else:
            draft = self._ask(chosen.value, _DRAFTS[chosen], run, Stage.GENERATE)
        by = self._generated_by(run)
        if isinstance(draft, BlogDraft):
            return build_blog_post(draft, generated_by=by), draft
        if isinstance(draft, ThreadDraft):
            return build_thread(draft, generated_by=by), draft
        if isinstance(draft, RepoDraft):
            return build_repo(draft, generated_by=by), draft
        assert isinstance(draft, ImageDraft)
        return draft, draft  # the image itself is made in the image stage

    def _planned_draft(self, run: _Run, chosen: OutputFormat) -> BlogDraft | RepoDraft:
        """Plan, draft, review; one revision (and its review) when a model review scores below the
        threshold. Only a model's review counts: the offline templates cannot review, so their verdict is
        not recorded and never asks for a revision (see `OfflineProvider`)."""
        schema: type[BlogDraft | RepoDraft] = BlogDraft if chosen == OutputFormat.BLOG_POST else RepoDraft
        task: Task = chosen.value
        plan = self._ask("plan", PlanDraft, run, Stage.GENERATE, plan_instructions(chosen))
        draft = self._ask(task, schema, run, Stage.GENERATE, draft_instructions(chosen, plan))
        if run.calls[-1].fallback:
            # The templates wrote it after the models failed: a model's review of it (and its tokens) would
            # buy nothing, since no revision follows an offline draft.
            return draft
        drafted_by_model = not _offline(run.calls[-1])
        review, reviewed_by_model = self._review(run, chosen, draft)
        if reviewed_by_model and drafted_by_model and review.score < self.review_threshold:
            draft = self._ask(task, schema, run, Stage.GENERATE, draft_instructions(chosen, plan, review))
            review, reviewed_by_model = self._review(run, chosen, draft)
        run.review_score = review.score if reviewed_by_model else None
        return draft

    def _review(self, run: _Run, chosen: OutputFormat, draft: BlogDraft | RepoDraft) -> tuple[ReviewVerdict, bool]:
        verdict = self._ask("review", ReviewVerdict, run, Stage.GENERATE, review_instructions(chosen, draft))
        return verdict, not _offline(run.calls[-1])

    def _generated_by(self, run: _Run) -> str:
        """Who wrote the content: the providers that answered the run's calls (not the chain's name)."""
        answered = [
            call for call in run.calls if not call.failed and (call.task != "image" or call.stage != Stage.IMAGE.value)
        ]
        names = list(
            dict.fromkeys(f"{c.provider}:{c.model}" if c.provider != "offline" else "offline" for c in answered)
        )
        return ", ".join(names)[:200] or self.provider.name

    def _covers(self, run: _Run) -> bool:
        """Whether a blog post gets a cover: images on, storage working, and a run that did not fall back
        (a fallback run uploads nothing)."""
        return self.images_available and not run.fell_back

    def _render(self, run: _Run, chosen: OutputFormat, content: Any, draft: BaseModel) -> OutputContent:
        """Render images in memory; they are stored only after the capture."""
        if chosen == OutputFormat.IMAGE:
            assert isinstance(draft, ImageDraft)
            stored = self._rendered(run, draft, "image.png")  # the main output: a failure fails the run
            return ImageContent(
                prompt=draft.prompt,
                caption=draft.caption,
                headline=draft.headline,
                image=stored,
                generated_by=self._generated_by(run),
            )
        # A blog post's cover card is extra: without it the post is still saved, as a partial run.
        try:
            stored = self._rendered(run, _cover_draft(content), "cover.png")
        except Exception as exc:
            run.soft_errors.append((Stage.IMAGE, f"cover image failed: {_describe(exc)}"))
            return content  # type: ignore[no-any-return]
        return content.model_copy(update={"cover_image": stored})  # type: ignore[no-any-return]

    def _rendered(self, run: _Run, draft: ImageDraft, name: str) -> StoredImage:
        path = f"{run.execution.user_id}/{run.execution.id}/{name}"
        self._beat(run, Stage.IMAGE)
        if run.fell_back:
            # A fallback run is never charged: no paid image model, and nothing uploaded to the public bucket.
            # Its title card is kept in the output itself (a data: URL), so its URL never points to nothing.
            card = _title_card(draft)
            run.add_image(card)
            return StoredImage(
                storage_path=path,
                url="data:image/png;base64," + base64.b64encode(card.data).decode("ascii"),
                width=card.width,
                height=card.height,
                mime_type="image/png",
            )
        image = self._draw(draft)
        run.add_image(image)
        run.uploads.append((path, image.data))
        return StoredImage(
            storage_path=path,
            url=self._client.storage.public_url(path),
            width=image.width,
            height=image.height,
            mime_type="image/png",
        )

    def _draw(self, draft: ImageDraft, *, model: bool | None = None) -> RenderedImage:
        """A picture for a draft: the image model's in mode "model", else the offline title card (`model`
        forces one or the other: `deliver` redraws with the renderer that made the picture)."""
        use_model = self._render_image is not None if model is None else model
        if not use_model:
            return _title_card(draft)
        if self._render_image is None:
            raise ConfigurationError(
                "this picture was made by an image model, and this pipeline has none (image_mode 'model' "
                "with an image_renderer redraws it)"
            )
        clipped = draft.model_copy(update={"prompt": draft.prompt[:IMAGE_PROMPT_CHARS]})
        image = self._render_image(clipped)
        if not isinstance(image, RenderedImage):
            raise ProviderError(f"the image renderer returned {type(image).__name__}, not a RenderedImage")
        return image

    def _github_token(self, run: _Run) -> str | None:
        try:
            return self._client.credentials.get_secret(Provider.GITHUB, user_id=run.execution.user_id)
        except IdeaExpansionError as exc:  # no token, a deactivated one, one that no longer decrypts
            reason = (
                "no active GitHub token: the user must sign in with GitHub to publish repositories"
                if isinstance(exc, NotFoundError)
                else _describe(exc)
            )
            run.soft_errors.append((Stage.PUBLISH, f"publishing to GitHub failed: {reason}"))
            return None

    def _outcome(self, run: _Run, content: OutputContent) -> ExpansionOutcome:
        fallbacks = [call for call in run.calls if call.fallback]
        if fallbacks:  # the fallback rule: partial, never charged (the database releases the credit)
            errors = list(dict.fromkeys(error for call in fallbacks for error in call.fallback_errors or ()))
            tasks = ", ".join(dict.fromkeys(call.task for call in fallbacks))
            message = (
                f"the offline templates answered {tasks} because the models failed ({'; '.join(errors)[:1200]}); "
                "not charged: the credit was released, and nothing was uploaded or published"
            )
            run.soft_errors.insert(0, (Stage(fallbacks[0].stage), message))
        partial = bool(run.soft_errors)
        return ExpansionOutcome(
            status="partial" if partial else "completed",
            tokens_used=sum(call.tokens for call in run.calls[:64]),
            model_calls=run.calls[:64],
            cost_usd=self._cost(run.calls),
            review_score=run.review_score,
            evaluation=run.evaluation,
            format_chosen=run.format_chosen,
            format_reasoning=run.format_reasoning,
            content=content,
            error_step=run.soft_errors[0][0] if partial else None,
            error_message=_storable("; ".join(message for _, message in run.soft_errors), 2000) if partial else None,
        )

    def _fail(self, execution: Execution, run: _Run | None, stage: Stage, message: str) -> None:
        calls = run.calls[:64] if run else []
        try:
            outcome = ExpansionOutcome(
                status="failed",
                tokens_used=sum(call.tokens for call in calls),
                model_calls=calls,
                cost_usd=self._cost(run.calls if run else []),
                evaluation=run.evaluation if run else None,
                format_chosen=run.format_chosen if run else None,
                format_reasoning=run.format_reasoning if run else None,
                error_step=stage,
                error_message=_storable(message, 2000),
            )
            self._client.expansions.finish(execution.id, outcome)
        except (APIConnectionError, ConflictError) as exc:
            # The database is unreachable or the run was reaped: the reaper (or nothing) is left to do.
            log.error("could not record failure of %s: %s", execution.id, exc)
        except (IdeaExpansionError, ValueError) as exc:
            # The record itself was refused, by the database or by its model's checks (what a server sent
            # that they cannot hold): end the run failed and released all the same, with the bare facts,
            # rather than leave it running, its credit held, until the reaper. (pydantic's ValidationError is
            # a ValueError.)
            log.error("the failure record of %s was refused (%s); recording it without its details", execution.id, exc)
            refused = _storable(f"{message[:1000]} (its details were refused: {exc})", 2000)
            bare = ExpansionOutcome(status="failed", error_step=stage, error_message=refused)
            try:
                self._client.expansions.finish(execution.id, bare)
            except IdeaExpansionError as again:
                log.error("could not record failure of %s: %s", execution.id, again)

    # -- after the capture ------------------------------------------------------------------------------
    def _deliver(self, run: _Run, finished: ExpansionResult, on_progress: ProgressCallback | None) -> ExpansionResult:
        """The user-visible side effects, now that the credit is captured. A failure makes the run partial;
        nothing raised here can undo the capture or take a worker down."""
        result = finished
        execution = run.execution
        for path, data in run.uploads:
            try:
                self._client.storage.upload(path, data, content_type="image/png", upsert=True)
            except Exception as exc:
                result = self._record_failure(result, "image", f"storing {path} failed: {_describe(exc)}")
        content = finished.content()
        if run.github_token is None or not isinstance(content, GitHubRepoContent):
            return result
        publisher = GitHubPublisher(run.github_token, http_client=self.github_http, base_url=self._github_api)
        try:
            if on_progress is not None:
                on_progress(Stage.PUBLISH, execution.id)
            published = publisher.publish(content, private=not execution.make_public)
        except Exception as exc:
            if isinstance(exc, PublishError) and exc.status == 401:
                self._invalidate_github_token(execution.user_id)
            return self._record_failure(result, "publish", f"publishing to GitHub failed: {_describe(exc)}")
        # Pushed: from here on only the record can fail, and a failed record must never lead to a second push.
        return self._record_publication(execution.id, published) or result

    def _record_failure(self, result: ExpansionResult, step: DeliveryStep, message: str) -> ExpansionResult:
        try:
            return self._client.expansions.record_delivery(result.execution.id, step, error_message=message)
        except Exception as exc:
            log.error("could not record the failed %s delivery of %s (%s): %s", step, result.execution.id, message, exc)
            return result

    def _record_publication(self, execution_id: uuid.UUID, published: PublishResult) -> ExpansionResult | None:
        for attempt in (1, 2):
            try:
                return self._client.expansions.record_delivery(
                    execution_id, "publish", publication_url=published.url, publication_metadata=published.metadata()
                )
            except Exception as exc:
                log.error(
                    "could not record that %s was published at %s (try %d): %s",
                    execution_id,
                    published.url,
                    attempt,
                    exc,
                )
        return None

    def _invalidate_github_token(self, user_id: uuid.UUID) -> None:
        try:
            self._client.credentials.mark_validated(Provider.GITHUB, False, user_id=user_id)
        except Exception as exc:
            log.error("could not mark the GitHub token of %s invalid: %s", user_id, exc)

    def _publisher(self, user_id: uuid.UUID) -> GitHubPublisher:
        try:
            token = self._client.credentials.get_secret(Provider.GITHUB, user_id=user_id)
        except NotFoundError:
            raise NotFoundError(
                "no active GitHub token: the user must sign in with GitHub to publish repositories", code="PT404"
            ) from None
        return GitHubPublisher(token, http_client=self.github_http, base_url=self._github_api)

    # -- helpers ----------------------------------------------------------------------------------------
    def _ask(self, task: Task, schema: type[T], run: _Run, stage: Stage, instructions: str | None = None) -> T:
        text = INSTRUCTIONS[task] if instructions is None else instructions
        self._beat(run, stage)
        try:
            completion = self.provider.generate(task, schema, idea=_brief(run.idea), instructions=text)
        except ProviderError as exc:  # what the failed calls spent is recorded, on the failed run too
            run.add_failed(exc.failed_calls, stage, task)
            raise
        if not isinstance(completion.value, schema):
            raise ProviderError(f"{self.provider.name} answered {task} with {type(completion.value).__name__}")
        run.add(completion, stage, task, self.provider.name)
        return completion.value

    def _cost(self, calls: list[ModelCall]) -> Decimal | None:
        """What the calls cost by the price table, failed calls included: None without one, when a model
        call is unpriced, or when a model call's usage was not reported (its tokens are unknown). The
        offline templates and the title card cost nothing."""
        if self.prices is None:
            return None
        total = Decimal(0)
        for call in calls:
            if call.provider == "offline":
                continue
            if not call.usage_reported:
                return None
            cost = self.prices.cost(call.model, call.input_tokens, call.output_tokens)
            if cost is None:
                return None
            total += cost
        if total >= _MOST_COST:  # counts a server claimed, priced: more than the record holds, so not known
            log.warning("a run's cost came to %s, past what executions.cost_usd holds: recorded as unknown", total)
            return None
        return total.quantize(Decimal("0.000001"))


def _check_service_client(client: IdeaExpansion) -> None:
    from .._client import IdeaExpansion

    if not isinstance(client, IdeaExpansion):  # an AttributeError later, otherwise
        raise InvalidRequestError(f"client must be an IdeaExpansion, not {type(client).__name__}")
    if client.scope.role != "service_role":
        raise IdeaExpansionError("the pipeline runs on the service client, not a user or anonymous view")


def _whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _brief(idea: Idea) -> IdeaBrief:
    return IdeaBrief(
        title=idea.title,
        description=idea.description,
        bullets=tuple(str(b) for b in idea.bullets),
        external_links=tuple(str(link) for link in idea.external_links),
    )


def _cover_draft(post: BlogPostContent) -> ImageDraft:
    return ImageDraft(prompt=f"Title card for {post.title}", caption=post.meta_description, headline=post.title[:120])


def _images_of(content: OutputContent) -> list[tuple[StoredImage, ImageDraft]]:
    """The stored images of an output and the drafts that render them again."""
    if isinstance(content, BlogPostContent) and content.cover_image is not None:
        return [(content.cover_image, _cover_draft(content))]
    if isinstance(content, ImageContent):
        headline = content.headline or content.caption[:120]
        return [(content.image, ImageDraft(prompt=content.prompt, caption=content.caption, headline=headline))]
    return []


def _title_card(draft: ImageDraft) -> RenderedImage:
    data = render_title_card(draft.headline, draft.caption)
    return RenderedImage(data=data, width=1200, height=630, provider=TITLE_CARD_PROVIDER, model=TITLE_CARD_MODEL)


def _offline(call: ModelCall) -> bool:
    return call.provider == "offline"


def _storage_available(client: IdeaExpansion) -> bool:
    return client.storage.available


_CONTENT_TASKS = frozenset({"blog_post", "twitter_thread", "github_repo", "image"})
"""The tasks whose answer is the run's content (in the generate stage): only they can fall back."""
_MOST_COST = Decimal("1000000")
"""executions.cost_usd is numeric(12, 6): a cost of a million or more cannot be recorded."""
_MOST_TOKENS_PER_CALL = 10_000_000
"""More than any model's window: a count past it (a broken or hostile server's) is recorded as this, so that
the sums of a run's 64 calls always fit the database's integers."""


REASONING_CHARS = 1_000
"""The most of the judge's and the format choice's reasoning a run records (the database holds 2,000): two
sentences are asked for, and a server that ignores its output cap must not fill the record."""


def _storable(text: object, limit: int) -> str:
    """`text` as the database can hold it: a string (a server may send a model name that is not one), no NUL
    (text and jsonb refuse it) and no lone surrogate (UTF-8 cannot encode it), at most `limit` characters."""
    value = text if isinstance(text, str) else str(text)
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")[:limit]


def _bounded_tokens(count: object) -> int:
    """A token count as the record holds it: a whole number from 0 to `_MOST_TOKENS_PER_CALL` (anything else a
    server sent counts 0)."""
    if not isinstance(count, int) or isinstance(count, bool):
        return 0
    return min(max(0, count), _MOST_TOKENS_PER_CALL)


def _describe(exc: BaseException) -> str:
    # API, provider and publisher errors already say what failed; anything else is named by its type.
    if isinstance(exc, APIError | ProviderError | PublishError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
