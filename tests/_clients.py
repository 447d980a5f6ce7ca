"""One resource suite over both clients: `IdeaExpansion` and `AsyncIdeaExpansion`.

A resource test module asks for its `client` through `client_of_kind`, in a fixture parametrized with
`CLIENT_KINDS`:

    @pytest.fixture(params=CLIENT_KINDS)
    def client(request: pytest.FixtureRequest, client: IdeaExpansion) -> IdeaExpansion:
        return client_of_kind(request, client)

so each test runs once on the sync client and once on the async one, with the same body. (A module
whose other tests need the sync client itself, to hand it to a `Pipeline`, gives its fixture no params
and marks its resource tests `@over_both_clients`.)

The async client is reached through `AsyncAsSync`, a test-only face that looks like the sync client:
every operation of an async resource is called as written and its coroutine awaited on an event loop
the face owns (pages: the `AsyncPaginator` awaited for its first `AsyncPage`, later pages awaited the
same way, iteration an `async for` over the page). Nothing reaches the sync twin that the async client
would not reach itself: an operation that does not return something to await fails the test rather
than passing as the sync client would.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from idea_expansion import IdeaExpansion, Settings
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion.backends._base import Scope
from idea_expansion.resources._base import AsyncResource
from idea_expansion.resources._pagination import AsyncPage, AsyncPaginator

__all__ = ["CLIENT_KINDS", "AsyncAsSync", "EventLoopThread", "async_client", "client_of_kind", "over_both_clients"]

T = TypeVar("T")

CLIENT_KINDS = ["sync", "async"]
"""The parameters of a `client` fixture that runs a suite over both clients."""

over_both_clients = pytest.mark.parametrize("client", CLIENT_KINDS, indirect=True)
"""Runs one test over both clients, in a module whose other tests need the sync client itself (they hand
it to a `Pipeline`): its `client` fixture is `client_of_kind`'s, without parameters of its own."""


class EventLoopThread:
    """An event loop running in a thread of its own: the loop the async client lives on in the tests.

    The loop outlives each call, as a service's does, so the client's connection pool (bound to the loop
    that opened it) serves every test of the session. Calls may come from any thread but this one."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-client-loop", daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` on the loop and return its result (or raise its error) here."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking call from inside the event loop would deadlock it")
        return asyncio.run_coroutine_threadsafe(_awaited(awaitable), self._loop).result()

    def close(self) -> None:
        """Stop the loop once the work it was given (and its thread pool) is done."""
        if self._loop.is_closed():
            return
        self.run(self._loop.shutdown_default_executor())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class AsyncAsSync:
    """An `AsyncIdeaExpansion` (the root client or a view) with the sync client's face."""

    def __init__(self, client: AsyncIdeaExpansion, loop: EventLoopThread) -> None:
        self._client = client
        self._loop = loop

    @property
    def wrapped(self) -> AsyncIdeaExpansion:
        """The async client behind the face."""
        return self._client

    @property
    def scope(self) -> Scope:
        return self._client.scope

    @property
    def settings(self) -> Settings:
        return self._client.settings

    @property
    def backend_kind(self) -> str:
        return self._client.backend_kind

    @property
    def backend(self) -> _AwaitingCalls:
        """The async backend, its calls awaited (tests reach past the resources with `backend.query`)."""
        return _AwaitingCalls(self._client.backend, self._loop, "backend")

    def for_user(self, user_id: Any) -> AsyncAsSync:
        return AsyncAsSync(self._client.for_user(user_id), self._loop)

    def for_access_token(self, access_token: str) -> AsyncAsSync:
        return AsyncAsSync(self._client.for_access_token(access_token), self._loop)

    def anonymous(self) -> AsyncAsSync:
        return AsyncAsSync(self._client.anonymous(), self._loop)

    def close(self) -> None:
        self._loop.run(self._client.close())

    def __getattr__(self, name: str) -> _AwaitingCalls:
        # Only the resources (`ideas`, `users`, ...) are passed through: anything else a test needs is
        # added above on purpose, so the face never lets a sync-only attribute through unnoticed.
        resource = getattr(self._client, name)
        if not isinstance(resource, AsyncResource):
            raise AttributeError(f"the async face exposes the async client's resources, not {name!r}")
        return _AwaitingCalls(resource, self._loop, name)

    def __repr__(self) -> str:
        return f"AsyncAsSync({self._client!r})"


class _AwaitingCalls:
    """An object of the async client (a resource, the backend) whose public methods are called as written
    and their results awaited on the loop."""

    def __init__(self, target: object, loop: EventLoopThread, name: str) -> None:
        self._target = target
        self._loop = loop
        self._name = name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self._target, name)
        if not callable(method):
            return method
        label = f"{self._name}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            return _settled(method(*args, **kwargs), self._loop, label)

        return call


def _settled(result: object, loop: EventLoopThread, label: str) -> Any:
    """What the sync client's call returns, from what the async client's returned."""
    if isinstance(result, AsyncPaginator):
        return PageOnLoop(loop.run(result), loop)
    if inspect.iscoroutine(result):
        return loop.run(result)
    # An async operation that answers at once did its work without awaiting: the async client's bug
    # (a blocking call in the event loop, or the sync twin doing the work), which this suite must show.
    raise TypeError(f"{label}(...) returned {type(result).__name__}, not a coroutine or an AsyncPaginator")


class PageOnLoop(Generic[T]):
    """An `AsyncPage` with `SyncPage`'s face: later pages awaited, iteration an `async for` on the loop."""

    def __init__(self, page: AsyncPage[T], loop: EventLoopThread) -> None:
        self._page = page
        self._loop = loop

    @property
    def data(self) -> list[T]:
        return self._page.data

    @property
    def next_cursor(self) -> str | None:
        return self._page.next_cursor

    def has_next_page(self) -> bool:
        return self._page.has_next_page()

    def get_next_page(self) -> PageOnLoop[T]:
        return PageOnLoop(self._loop.run(self._page.get_next_page()), self._loop)

    def iter_pages(self) -> Iterator[PageOnLoop[T]]:
        page: PageOnLoop[T] = self
        while True:
            yield page
            if not page.has_next_page():
                return
            page = page.get_next_page()

    def __iter__(self) -> Iterator[T]:
        return iter(self._loop.run(_every_item(self._page)))

    def __repr__(self) -> str:
        return f"PageOnLoop({self._page!r})"


async def _every_item(page: AsyncPage[T]) -> list[T]:
    return [item async for item in page]


# -- fixtures -----------------------------------------------------------------------------------------------
def client_of_kind(request: pytest.FixtureRequest, sync_client: IdeaExpansion) -> Any:
    """The service client of the kind the test runs with (`request.param`, "sync" when not parametrized):
    `sync_client` itself, or the session's async client behind its sync face (an `AsyncAsSync`)."""
    kind = getattr(request, "param", "sync")
    if kind == "sync":
        return sync_client
    if kind == "async":
        return request.getfixturevalue("async_client")
    raise ValueError(f"unknown client kind {kind!r}: one of {CLIENT_KINDS}")


@pytest.fixture(scope="session")
def async_client(
    database_url: str, encryption_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AsyncAsSync]:
    """The async service client on the test database (the sync `client`'s), behind its sync face."""
    settings = Settings(_env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]
    loop = EventLoopThread()
    storage: Path = tmp_path_factory.mktemp("async-storage")
    face = AsyncAsSync(AsyncIdeaExpansion(settings=settings, backend="postgres", storage_dir=storage), loop)
    try:
        yield face
    finally:
        face.close()
        loop.close()
