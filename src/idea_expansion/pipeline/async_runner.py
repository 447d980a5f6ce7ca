"""`AsyncPipeline`: the pipeline for asyncio services, over `AsyncIdeaExpansion`.

Queueing a run and asking where it is are single database calls: they are awaited on the async client.
A whole run (model calls, rendering, storing, publishing) is blocking work: `await expand(...)` runs
it with the sync `Pipeline`, on the client's sync twin, in a worker thread, so the event loop stays
free while it runs and the records are exactly those of a sync run.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._exceptions import ConfigurationError, IdeaExpansionError, InvalidRequestError
from ..types import Execution, OutputFormat
from ..types.expansions import ExpansionResult, ExpansionStatus
from ..types.ids import IdLike
from .runner import ImageMode, ImageRenderer, Pipeline, ProgressCallback, RunOptions, checked_run_options

if TYPE_CHECKING:
    from .._async_client import AsyncIdeaExpansion
    from .._settings import Settings
    from .pricing import PriceTable
    from .providers import Provider as ModelProvider

__all__ = ["AsyncPipeline"]


class AsyncPipeline:
    """Expansions from async code. `enqueue` and `status` are awaited on the async client; `expand` runs
    the run in a worker thread (see the module docstring). Close it (or `async with`) when done.

    Example:
        async with AsyncIdeaExpansion.from_env() as client, AsyncPipeline(client) as pipeline:
            queued = await pipeline.enqueue(user_id)
            result = await pipeline.expand(user_id, format="blog_post")
    """

    def __init__(
        self,
        client: AsyncIdeaExpansion,
        *,
        provider: ModelProvider | None = None,
        settings: Settings | None = None,
        stale_after: timedelta | None = None,
        image_mode: ImageMode | None = None,
        image_renderer: ImageRenderer | None = None,
        prices: PriceTable | None = None,
        review_threshold: int | None = None,
    ) -> None:
        """Args:
        provider: The model provider of the runs; by default the one the settings name (as
            `Pipeline.from_settings`), else the offline templates.
        settings: Where the providers, image mode, prices and review threshold are read from (default:
            the client's).
        image_mode, image_renderer, prices, review_threshold: As `Pipeline`'s; each given replaces what
            the settings say.
        """
        from .._async_client import AsyncIdeaExpansion
        from .._settings import Settings

        # Checked now, not when the first run builds the sync pipeline (an AttributeError there).
        if not isinstance(client, AsyncIdeaExpansion):
            raise InvalidRequestError(f"client must be an AsyncIdeaExpansion, not {type(client).__name__}")
        if settings is not None and not isinstance(settings, Settings):
            raise ConfigurationError(f"settings must be a Settings, not {type(settings).__name__}")
        if client.scope.role != "service_role":
            raise IdeaExpansionError("the pipeline runs on the service client, not a user or anonymous view")
        if image_mode is not None or image_renderer is not None or review_threshold is not None:
            # The options given, checked as Pipeline checks them (a mode given alone has no renderer).
            checked_run_options(image_mode, image_renderer, 0 if review_threshold is None else review_threshold)
        self._client = client
        self._arguments: dict[str, Any] = {"provider": provider, "settings": settings, "stale_after": stale_after}
        self._options = RunOptions()
        if image_mode is not None:
            self._options["image_mode"] = image_mode
        if image_renderer is not None:
            self._options["image_renderer"] = image_renderer
        if prices is not None:
            self._options["prices"] = prices
        if review_threshold is not None:
            self._options["review_threshold"] = review_threshold
        self._pipeline: Pipeline | None = None
        self._lock = threading.Lock()

    def _runs(self) -> Pipeline:
        """The sync pipeline that runs whole expansions (built on first use, on the client's sync twin)."""
        with self._lock:
            if self._pipeline is None:
                self._pipeline = Pipeline.from_settings(self._client.sync_context(), **self._arguments, **self._options)
            return self._pipeline

    async def expand(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        idempotency_key: IdLike | None = None,
        public: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> ExpansionResult:
        """Run one expansion and return it once finished, as `Pipeline.expand` (same arguments, same errors).

        `on_progress` is called from the worker thread. Cancelling the awaiting task does not stop a run
        that has started: it finishes (and is charged or released) as recorded in the database; ask
        `status` for it with the idempotency key's run.
        """
        pipeline = await asyncio.to_thread(self._runs)
        return await asyncio.to_thread(
            pipeline.expand,
            user_id,
            idea_id=idea_id,
            format=format,
            idempotency_key=idempotency_key,
            public=public,
            on_progress=on_progress,
        )

    async def enqueue(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        idempotency_key: IdLike | None = None,
        public: bool = False,
    ) -> Execution:
        """Queue an expansion for the workers (`Pipeline.enqueue`): its credit is held and its idea fixed now.
        An image run where images cannot be made or stored is refused first (`ConfigurationError`)."""
        if format is not None:
            # In a thread: it builds the pipeline, and asks the storage whether it works (blocking I/O).
            pipeline = await asyncio.to_thread(self._runs)
            await asyncio.to_thread(pipeline.check_format, format)
        return await self._client.expansions.enqueue(
            user_id,
            idea_id=idea_id,
            format=None if format is None else str(format),
            idempotency_key=idempotency_key,
            public=public,
        )

    async def status(self, execution_id: IdLike) -> ExpansionStatus:
        """Where a run is: status, stage, its outputs and its error if any."""
        return await self._client.expansions.status(execution_id)

    async def reap(self, stale_after: timedelta | None = None) -> list[uuid.UUID]:
        """Fail running executions whose worker stopped (no heartbeat) and release their credits."""
        return await asyncio.to_thread(self._runs().reap, stale_after)

    async def close(self) -> None:
        """Close what the run pipeline opened (its GitHub HTTP client). The client stays open."""
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await asyncio.to_thread(pipeline.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
