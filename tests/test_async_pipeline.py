"""AsyncPipeline on a real database: enqueue and status awaited on the async client, `await expand(...)`
running the whole run off the event loop, with the same records and the same charge as a sync run."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from idea_expansion import (
    AsyncIdeaExpansion,
    ExecutionStatus,
    IdeaExpansionError,
    ImageContent,
    InsufficientCreditsError,
    InvalidRequestError,
    Settings,
)
from idea_expansion.pipeline import AsyncPipeline, OfflineProvider


def _client(url: str, key: str, storage: Path) -> AsyncIdeaExpansion:
    settings = Settings(_env_file=None, DATABASE_URL=url, ENCRYPTION_KEY=key)  # type: ignore[call-arg]
    return AsyncIdeaExpansion(settings=settings, backend="postgres", storage_dir=storage)


def test_enqueue_status_and_expand_are_awaited_and_charge_once(
    own_database: str, encryption_key: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with (
            _client(own_database, encryption_key, tmp_path) as client,
            AsyncPipeline(client, provider=OfflineProvider()) as pipeline,
        ):
            user = await client.users.create(email="async-pipeline@example.com")
            me = client.for_user(user.id)
            first = await me.ideas.create(title="A queue that explains itself", description="for operators")
            second = await me.ideas.create(title="Regex explainer", description="a CLI")

            queued = await pipeline.enqueue(user.id, idea_id=first.id)
            assert queued.status == ExecutionStatus.QUEUED
            status = await pipeline.status(queued.id)
            assert (status.status, status.output_ids) == (ExecutionStatus.QUEUED, [])

            result = await pipeline.expand(user.id, idea_id=second.id, format="image")
            assert result.execution.status == ExecutionStatus.COMPLETED
            outputs = [o async for o in me.outputs.list()]
            assert [type(o.content) for o in outputs] == [ImageContent]
            assert (await pipeline.status(result.execution.id)).status == ExecutionStatus.COMPLETED

            balance = await client.credits.balance(user.id)
            charges = [c async for c in client.credits.charges(user.id)]
            # One run finished (captured), one queued (held): 5 free, 2 taken.
            assert balance.free_expansions_remaining == 3
            assert sorted(c.status for c in charges) == ["captured", "held"]

    asyncio.run(scenario())


def test_expand_leaves_the_event_loop_free(own_database: str, encryption_key: str, tmp_path: Path) -> None:
    """A run whose model calls take 0.1 s each: the loop keeps ticking all the while."""

    async def scenario() -> tuple[int, float]:
        async with _client(own_database, encryption_key, tmp_path) as client:
            pipeline = AsyncPipeline(client, provider=OfflineProvider(latency=0.1))
            user = await client.users.create(email="loop@example.com")
            await client.for_user(user.id).ideas.create(title="Slow thinker", description="takes its time")
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            loop = asyncio.get_running_loop()
            counting = asyncio.create_task(ticker())
            started = loop.time()
            try:
                result = await pipeline.expand(user.id, format="twitter_thread")
            finally:
                stop.set()
                await counting
                await pipeline.close()
            assert result.execution.status == ExecutionStatus.COMPLETED
            return ticks, loop.time() - started

    ticks, seconds = asyncio.run(scenario())
    assert seconds >= 0.2  # several model calls at 0.1 s each
    # A blocked loop would tick once or twice; a free one about every 10 ms of the run.
    assert ticks >= seconds / 0.01 / 3, (ticks, seconds)


def test_expand_errors_are_the_sync_pipeline_errors(own_database: str, encryption_key: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _client(own_database, encryption_key, tmp_path) as client:
            async with AsyncPipeline(client) as pipeline:
                user = await client.users.create(email="broke@example.com")
                with pytest.raises(InvalidRequestError, match="format"):
                    await pipeline.expand(user.id, format="video")
                await client.for_user(user.id).ideas.create(title="One idea", description="and no credit")
                for _ in range(5):
                    await client.credits.consume(user.id)
                with pytest.raises(InsufficientCreditsError):
                    await pipeline.expand(user.id)
                with pytest.raises(InsufficientCreditsError):
                    await pipeline.enqueue(user.id)
                assert [e async for e in client.executions.list(user_id=user.id)] == []
            with pytest.raises(IdeaExpansionError, match="service client"):
                AsyncPipeline(client.for_user(user.id))

    asyncio.run(scenario())


def test_the_async_pipeline_takes_the_image_mode_prices_and_threshold_and_checks_off_the_loop(
    own_database: str, encryption_key: str, tmp_path: Path
) -> None:
    """As `Pipeline`: image_mode, prices and review_threshold given replace the settings'; and `enqueue`
    asks whether images can be made (a storage check, blocking I/O) in a worker thread, not on the loop."""
    from decimal import Decimal

    from idea_expansion import BlogPostContent, ConfigurationError
    from idea_expansion.pipeline.pricing import PriceTable

    prices = PriceTable.from_mapping({"m": {"input_per_million": 1, "output_per_million": 1}})

    async def scenario() -> None:
        async with (
            _client(own_database, encryption_key, tmp_path) as client,
            AsyncPipeline(
                client, provider=OfflineProvider(), image_mode="none", prices=prices, review_threshold=55
            ) as pipeline,
        ):
            user = await client.users.create(email="async-options@example.com")
            me = client.for_user(user.id)
            idea = await me.ideas.create(title="A poster", description="for a talk")
            runs = await asyncio.to_thread(pipeline._runs)
            assert (runs.image_mode, runs.review_threshold, runs.prices) == ("none", 55, prices)
            checked_on: list[int] = []
            check_format = runs.check_format

            def watched(format: object) -> None:  # the real check, noting the thread it runs on
                checked_on.append(threading.get_ident())
                check_format(format)  # type: ignore[arg-type]

            runs.check_format = watched  # type: ignore[method-assign]
            with pytest.raises(ConfigurationError, match="image"):
                await pipeline.enqueue(user.id, idea_id=idea.id, format="image")
            assert checked_on
            assert threading.get_ident() not in checked_on
            result = await pipeline.expand(user.id, idea_id=idea.id, format="blog_post")
            content = result.content()
            assert isinstance(content, BlogPostContent)
            assert content.cover_image is None
            assert result.execution.cost_usd == Decimal(0)
        with pytest.raises(InvalidRequestError, match="review_threshold"):
            AsyncPipeline(client, review_threshold=101)
        with pytest.raises(ConfigurationError, match="image_mode"):
            AsyncPipeline(client, image_mode="sometimes")  # type: ignore[arg-type]

    asyncio.run(scenario())
