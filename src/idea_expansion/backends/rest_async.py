"""AsyncRestBackend: `RestBackend` for asyncio, over supabase-py's async client (PostgREST /rest/v1).

The same requests, credentials and errors as the sync backend, from the same functions in `rest.py`
(the query built from a `Request`, the JSON form of values, the credentials per scope, the shaping of
function results, the error translation); only the waiting differs. One long-lived `httpx.AsyncClient`
(HTTP/1.1, explicit timeouts) serves every scope, as on the sync backend.

Retries are supabase-py's, exactly as on the sync backend: reads (GET) that meet a 503/520 or a dropped
connection are tried again, writes and function calls never (a repeated write could apply twice).

Supabase Auth's admin API and Storage are not here: the async client runs those few, small calls as
`Effect`s on its sync twin (a `RestBackend` built from the same settings) in a worker thread
(`AsyncIdeaExpansion.sync_context()`), so the event loop never waits on them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import httpx
from postgrest import APIResponse
from supabase import AsyncClient, AsyncClientOptions

from ._base import Request, Rpc, Scope
from .rest import (
    client_headers,
    http_client_settings,
    postgrest_query,
    returned_rows,
    rpc_arguments,
    rpc_result,
    translated_error,
    user_or_anon_credentials,
)

__all__ = ["AsyncRestBackend"]


class AsyncRestBackend:
    """Runs requests against the Supabase API, awaited.

    Building it needs no event loop (an async client is built by a sync constructor): supabase-py's
    `AsyncClient(...)` is built directly rather than with `acreate_client`, whose only extra step reads
    a signed-in session from the client's storage, and this backend signs no one in."""

    def __init__(
        self,
        url: str,
        *,
        service_role_key: str,
        anon_key: str | None = None,
        jwt_secret: str | None = None,
        httpx_client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        """
        Args:
            url: The project's API URL (SUPABASE_URL).
            service_role_key: Sent by the service scope.
            anon_key: Sent by user and anonymous scopes as their apikey.
            jwt_secret: Signs the token of a user scope that has no access token of its own.
            httpx_client: The client every request goes through (tests inject one); this backend then
                leaves closing it to the caller.
            timeout: Seconds before a request gives up (for the client built here).
        """
        self.url = url.rstrip("/")
        self._anon_key = anon_key
        self._jwt_secret = jwt_secret
        self._owns_http = httpx_client is None
        self._http = httpx_client or httpx.AsyncClient(**http_client_settings(timeout))
        self._service = self._client(service_role_key, authorization=None)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- clients per scope -------------------------------------------------------------------------
    def _client(self, api_key: str, *, authorization: str | None) -> AsyncClient:
        options = AsyncClientOptions(
            headers=client_headers(authorization),
            httpx_client=self._http,
            auto_refresh_token=False,
            persist_session=False,
        )
        return AsyncClient(self.url, api_key, options=options)

    def client_for(self, scope: Scope) -> AsyncClient:
        """The supabase-py async client that sends `scope`'s credentials.

        Raises:
            ConfigurationError: a user or anonymous scope without the anon key, or a user scope with
                neither an access token nor the JWT secret.
        """
        if scope.role == "service_role":
            return self._service
        api_key, authorization = user_or_anon_credentials(scope, anon_key=self._anon_key, jwt_secret=self._jwt_secret)
        return self._client(api_key, authorization=authorization)

    # -- AsyncBackend protocol ---------------------------------------------------------------------
    async def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        query = postgrest_query(self.client_for(scope).table(request.table), request)
        return returned_rows(await _data(query.execute()))

    async def rpc(self, request: Rpc, scope: Scope) -> Any:
        client = self.client_for(scope)
        return rpc_result(request, await _data(client.rpc(request.function, rpc_arguments(request)).execute()))


async def _data(response: Awaitable[APIResponse]) -> Any:
    """The body of a PostgREST answer, its failure raised as the SDK's error (see `translated_error`)."""
    try:
        return (await response).data
    except Exception as exc:
        error = translated_error(exc)
        if error is None:
            raise
        raise error from None
