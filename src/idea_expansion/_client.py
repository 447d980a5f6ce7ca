"""`IdeaExpansion`: the typed client. One backend (Supabase REST or direct Postgres) per root client;
`for_user()` views share it and run every call as that user, so RLS decides what they see."""

from __future__ import annotations

import functools
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx
from supabase import Client as SupabaseClient

from ._exceptions import ConfigurationError
from ._jwt import JwksKeys, jwks_url_for, verify_user_token
from ._settings import Settings
from .backends._base import Backend, Scope
from .backends.postgres import PostgresBackend
from .backends.rest import RestBackend
from .backends.storage import LocalStorage, RestStorage, StorageBackend
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

__all__ = ["IdeaExpansion"]

BackendChoice = Literal["rest", "postgres"]


class _Shared:
    """What a root client owns and its user views share."""

    def __init__(self, settings: Settings, backend: Backend, storage: StorageBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.storage = storage
        self.closed = False

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
                else direct Postgres (DATABASE_URL, else the embedded local database).
            database_url: Overrides DATABASE_URL for the Postgres backend.
            supabase_client: An existing supabase-py client to wrap (REST backend).
            httpx_client: The httpx client the REST backend sends through (tests inject one).
            storage_dir: Where the Postgres backend keeps stored files.
            timeout: Seconds before a request or a connection attempt gives up.

        Raises:
            ConfigurationError: a required setting is missing; the message says how to set it.
        """
        settings = settings or Settings()
        resolved, storage = _build_backend(
            settings, backend, database_url, supabase_client, httpx_client, storage_dir, timeout
        )
        self._shared = _Shared(settings, resolved, storage)
        self.scope = Scope("service_role")

    @classmethod
    def from_env(cls, **kwargs: object) -> IdeaExpansion:
        """A service client configured from the environment (and `.env`)."""
        return cls(settings=Settings(), **kwargs)  # type: ignore[arg-type]

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
        secret = _secret(self.settings.supabase_jwt_secret) or None  # an empty secret verifies nothing
        user_id = verify_user_token(access_token, secret=secret, jwks=self._shared.jwks)
        direct = isinstance(self.backend, PostgresBackend)
        return self._view(Scope("authenticated", user_id=user_id, access_token=None if direct else access_token))

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
    def storage_backend(self) -> StorageBackend:
        return self._shared.storage

    @property
    def encryptor(self) -> Encryptor:
        """The credential encryptor (ENCRYPTION_KEY, plus ENCRYPTION_KEYS_OLD for rotation)."""
        return self._shared.encryptor

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
            self._shared.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self.scope.role if self.scope.user_id is None else f"user {self.scope.user_id}"
        return f"IdeaExpansion(backend={type(self.backend).__name__}, as={who})"


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
            return choice, LocalStorage(choice, _storage_root(settings, storage_dir))
        if isinstance(choice, RestBackend):
            return choice, RestStorage(choice)
        raise ConfigurationError("backend must be 'rest', 'postgres', a RestBackend or a PostgresBackend")
    kind = choice or settings.backend or ("rest" if settings.supabase_url and not database_url else "postgres")
    if kind == "rest":
        rest = RestBackend(
            settings.require("supabase_url"),
            service_role_key=settings.require("supabase_service_role_key"),
            anon_key=_secret(settings.supabase_anon_key),
            jwt_secret=_secret(settings.supabase_jwt_secret),
            httpx_client=httpx_client,
            supabase_client=supabase_client,
            timeout=timeout,
        )
        return rest, RestStorage(rest)
    if kind != "postgres":
        raise ConfigurationError(f"IDEA_EXPANSION_BACKEND must be 'rest' or 'postgres', not {kind!r}")
    from .local import resolve_database_url

    url = resolve_database_url(database_url, settings.database_url)
    postgres = PostgresBackend(url, timeout=timeout)
    return postgres, LocalStorage(postgres, _storage_root(settings, storage_dir))


def _storage_root(settings: Settings, storage_dir: str | Path | None) -> Path:
    if storage_dir is not None:
        return Path(storage_dir)
    if settings.storage_dir:
        return Path(settings.storage_dir)
    import platformdirs

    return Path(platformdirs.user_cache_dir("idea-expansion")) / "storage"


def _secret(value: object) -> str | None:
    from pydantic import SecretStr

    return value.get_secret_value() if isinstance(value, SecretStr) else None
