"""RestBackend: the Supabase API (PostgREST /rest/v1, Storage /storage/v1) through supabase-py.

One long-lived httpx client (HTTP/1.1, explicit timeouts) serves every scope: the service client
sends the service-role key; a user scope sends the anon key as `apikey` and the user's JWT (minted
with the project's JWT secret, or the access token the caller passed) as `Authorization`. PostgREST
verifies the token and RLS decides; nothing is filtered here.

What the async twin (`rest_async.AsyncRestBackend`) needs too is written once, as the module-level
functions below: the credentials per scope, the PostgREST query built from a `Request` (supabase-py's sync
and async query builders have the same methods), the JSON form of values, the shaping of function results,
and the translation of supabase-py's and httpx's errors into the SDK's.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from postgrest.exceptions import APIError as PostgrestAPIError
from storage3.exceptions import StorageApiError
from supabase import Client, ClientOptions, create_client
from supabase_auth.errors import AuthError, AuthRetryableError

from .._exceptions import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    IdeaExpansionError,
    InvalidRequestError,
    auth_error,
    error_from_code,
)
from .._jwt import mint_user_token
from .._version import __version__
from ._base import Delete, Eq, Filter, In, Insert, Is, Json, Keyset, Request, Rpc, Scope, Select, Update

__all__ = [
    "RestBackend",
    "client_headers",
    "http_client_settings",
    "jsonable",
    "postgrest_query",
    "returned_rows",
    "rpc_arguments",
    "rpc_result",
    "translated_error",
    "user_or_anon_credentials",
]

CLIENT_INFO = f"idea-expansion/{__version__}"
_AUTH_PAGE_SIZE = 100
_AUTH_MAX_PAGES = 20
T = TypeVar("T")


class RestBackend:
    """Runs requests against the Supabase API."""

    def __init__(
        self,
        url: str,
        *,
        service_role_key: str,
        anon_key: str | None = None,
        jwt_secret: str | None = None,
        httpx_client: httpx.Client | None = None,
        supabase_client: Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._anon_key = anon_key
        self._jwt_secret = jwt_secret
        self._owns_http = httpx_client is None
        self._http = httpx_client or httpx.Client(**http_client_settings(timeout))
        self._service_key = service_role_key
        self._timeout = timeout
        self._injected = httpx_client is not None or supabase_client is not None
        self._service = supabase_client or self._client(service_role_key, authorization=None)

    def rebuild_arguments(self) -> dict[str, Any] | None:
        """The URL and timeout that build an equal backend in another process (a worker), with the keys
        from the settings; None when this one sends through an HTTP or Supabase client passed in."""
        return None if self._injected else {"url": self.url, "timeout": self._timeout}

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # -- clients per scope -------------------------------------------------------------------------
    def _client(self, api_key: str, *, authorization: str | None) -> Client:
        options = ClientOptions(
            headers=client_headers(authorization),
            httpx_client=self._http,
            auto_refresh_token=False,
            persist_session=False,
        )
        return create_client(self.url, api_key, options=options)

    def client_for(self, scope: Scope) -> Client:
        """The supabase-py client that sends `scope`'s credentials."""
        if scope.role == "service_role":
            return self._service
        api_key, authorization = user_or_anon_credentials(scope, anon_key=self._anon_key, jwt_secret=self._jwt_secret)
        return self._client(api_key, authorization=authorization)

    # -- Backend protocol --------------------------------------------------------------------------
    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        query = postgrest_query(self.client_for(scope).table(request.table), request)
        return returned_rows(self._call(lambda: query.execute().data))

    def rpc(self, request: Rpc, scope: Scope) -> Any:
        client = self.client_for(scope)
        args = rpc_arguments(request)
        return rpc_result(request, self._call(lambda: client.rpc(request.function, args).execute().data))

    # -- Supabase Auth (admin API, service-role key) ------------------------------------------------
    def create_auth_user(self, email: str, *, name: str | None = None) -> uuid.UUID:
        """Create a Supabase Auth user whose address the service vouches for (`email_confirm`), and
        return its id. The database's auth.users trigger creates the profile under that same id.

        Raises:
            ConflictError: Supabase Auth already holds this address (code 23505, as on direct Postgres).
        """
        metadata = {"name": name} if name else {}
        attributes: Any = {"email": email, "email_confirm": True, "user_metadata": metadata}
        response = self._call(lambda: self._service.auth.admin.create_user(attributes))
        return uuid.UUID(str(response.user.id))

    def delete_auth_user(self, user_id: uuid.UUID) -> None:
        """Delete a Supabase Auth user (the auth.users trigger deletes its profile and what it owns)."""
        self._call(lambda: self._service.auth.admin.delete_user(str(user_id)))

    def find_auth_user(self, email: str) -> tuple[uuid.UUID, bool] | None:
        """The Supabase Auth user that holds `email`: its id and whether the address is confirmed; None
        when no user holds it.

        supabase-py's `admin.list_users` lists all users a page at a time, with no filter, so this calls
        the same endpoint (GET /auth/v1/admin/users) with GoTrue's `filter` parameter. That filter is a
        substring match on the address and on the `full_name` metadata, which anyone can set to someone
        else's address: only an exact address counts here, and every page of matches is read.

        Raises:
            ConflictError: more matches than this reads (more than 2,000 look-alikes).
        """
        wanted = email.lower()
        for page in range(1, _AUTH_MAX_PAGES + 1):
            params = {"filter": email, "page": page, "per_page": _AUTH_PAGE_SIZE}
            users = self._auth_admin_get("admin/users", params).get("users")
            if not isinstance(users, list):
                raise APIConnectionError("Supabase Auth answered GET /admin/users without a users list")
            for user in users:
                held = str(user.get("email") or "") if isinstance(user, Mapping) else ""
                # ASCII only: Python's lower() folds look-alikes (the Kelvin sign) onto ASCII letters.
                if held.isascii() and held.lower() == wanted:
                    return uuid.UUID(str(user["id"])), user.get("email_confirmed_at") is not None
            if len(users) < _AUTH_PAGE_SIZE:
                return None
        raise error_from_code(
            "23505",
            f"cannot tell which Supabase Auth user holds {email}: more than "
            f"{_AUTH_MAX_PAGES * _AUTH_PAGE_SIZE} users match it",
        )

    def _auth_admin_get(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """GET an Auth admin endpoint with the service-role key, errors mapped as supabase-py's are."""
        headers = {
            "apikey": self._service_key,
            "Authorization": f"Bearer {self._service_key}",
            "X-Client-Info": CLIENT_INFO,
            "X-Supabase-Api-Version": "2024-01-01",
        }
        response = self._call(lambda: self._http.get(f"{self.url}/auth/v1/{path}", params=params, headers=headers))
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500:
            raise APIConnectionError(f"Supabase Auth failed: GET /{path} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            info: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
            code = info.get("error_code") or info.get("code")
            message = info.get("msg") or info.get("message") or f"HTTP {response.status_code}"
            raise auth_error(None if code is None else str(code), str(message), status=response.status_code)
        if not isinstance(body, dict):
            raise APIConnectionError(f"Supabase Auth answered GET /{path} with something other than a JSON object")
        return body

    def storage_call(self, scope: Scope, bucket: str, operation: Callable[[Any], T]) -> T:
        """Run a storage3 operation on `bucket` as `scope`, mapping Storage errors."""
        bucket_api = self.client_for(scope).storage.from_(bucket)
        return self._call(lambda: operation(bucket_api))

    @staticmethod
    def _call(operation: Callable[[], T]) -> T:
        try:
            return operation()
        except Exception as exc:
            error = translated_error(exc)
            if error is None:
                raise
            raise error from None


# -- what the sync and the async backend share ---------------------------------------------------------
def http_client_settings(timeout: float) -> dict[str, Any]:
    """The arguments of the httpx client (sync or async) a backend builds for itself."""
    # HTTP/1.1 on purpose: pooled HTTP/2 connections gave supabase-py users "Server disconnected".
    return {
        "http2": False,
        "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        "headers": {"X-Client-Info": CLIENT_INFO},
    }


def client_headers(authorization: str | None) -> dict[str, str]:
    """The headers of a supabase-py client: ours, and the user's token when a user scope sends one
    (supabase-py sends the API key as the bearer token otherwise)."""
    headers = {"X-Client-Info": CLIENT_INFO}
    if authorization:
        headers["Authorization"] = f"Bearer {authorization}"
    return headers


def user_or_anon_credentials(scope: Scope, *, anon_key: str | None, jwt_secret: str | None) -> tuple[str, str | None]:
    """The API key and bearer token (None: the key itself) of a user or anonymous scope: the anon key, and
    the caller's access token or one minted for the scope's user with the project's JWT secret.

    Raises:
        ConfigurationError: the anon key, or (for a user without an access token) the JWT secret, is not set.
    """
    if anon_key is None:
        raise ConfigurationError(
            "SUPABASE_ANON_KEY is not set: user and anonymous requests send it as their apikey "
            "(Dashboard -> Settings -> API, or `supabase status`)"
        )
    if scope.role == "anon":
        return anon_key, None
    token = scope.access_token
    if token is None:
        if jwt_secret is None or scope.user_id is None:
            raise ConfigurationError(
                "SUPABASE_JWT_SECRET is not set: for_user() mints the user's token with it "
                "(Dashboard -> Settings -> API -> JWT secret), or use for_access_token(token)"
            )
        token = mint_user_token(jwt_secret, scope.user_id)
    return anon_key, token


def postgrest_query(table: Any, request: Request) -> Any:
    """The PostgREST query for a table request, built on supabase-py's request builder for its table
    (`client.table(name)`, sync or async: both have the same methods). Writes ask for the affected rows
    back (supabase-py sends `Prefer: return=representation`)."""
    if isinstance(request, Select):
        query: Any = table.select(",".join(request.columns) or "*")
        query = _apply_filters(query, request.filters)
        for order in request.order:
            query = query.order(order.column, desc=order.descending)
        if request.limit is not None:
            query = query.limit(request.limit)
        if request.offset:
            query = query.offset(request.offset)
        return query
    if isinstance(request, Insert):
        rows = [{k: jsonable(v) for k, v in row.items()} for row in request.rows]
        if request.on_conflict:
            return table.upsert(rows, on_conflict=",".join(request.on_conflict))
        return table.insert(rows)
    if isinstance(request, Update):
        return _apply_filters(table.update({k: jsonable(v) for k, v in request.values.items()}), request.filters)
    if isinstance(request, Delete):
        return _apply_filters(table.delete(), request.filters)
    raise InvalidRequestError(f"unsupported request {request!r}")  # pragma: no cover - the Request union is closed


def returned_rows(data: Any) -> list[dict[str, Any]]:
    """The rows a table request returned (PostgREST answers an empty body as no rows)."""
    return list(data or [])


def rpc_arguments(request: Rpc) -> dict[str, Any]:
    """A function call's named arguments as the JSON body PostgREST takes."""
    return {k: jsonable(v) for k, v in request.args.items()}


def rpc_result(request: Rpc, data: Any) -> Any:
    """A function's result as the Postgres backend gives it. A composite comes back from PostgREST as a
    one-row list or as an object; a null composite as an object whose every field is null: that is None."""
    if request.returns == "row" and isinstance(data, list):
        return data[0] if data else None
    if request.returns == "row" and isinstance(data, dict) and all(v is None for v in data.values()):
        return None
    return data


def translated_error(exc: Exception) -> IdeaExpansionError | None:
    """The SDK's error for what supabase-py (PostgREST, Storage, Auth) or httpx raised, mapped by code;
    None for anything else, which the caller re-raises as it is."""
    if isinstance(exc, PostgrestAPIError):
        return error_from_code(
            exc.code, exc.message or "request failed", details=_text(exc.details), hint=exc.hint, raw=exc.json()
        )
    if isinstance(exc, StorageApiError):
        return error_from_code(exc.code, exc.message, status=exc.status, raw=exc.to_dict())
    if isinstance(exc, AuthRetryableError):
        if isinstance(exc.__cause__, httpx.TimeoutException):
            return APITimeoutError(f"Supabase Auth did not answer in time: {exc.message}")
        return APIConnectionError(f"cannot reach Supabase Auth: {exc.message}")
    if isinstance(exc, AuthError):
        return auth_error(exc.code, exc.message, status=getattr(exc, "status", None))
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"the Supabase API did not answer in time: {exc}")
    if isinstance(exc, httpx.TransportError):
        return APIConnectionError(f"cannot reach the Supabase API: {exc}")
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def jsonable(value: Any) -> Any:
    """A request value in the form PostgREST's JSON takes (ids, decimals and dates as text)."""
    if isinstance(value, Json):
        return value.value
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _literal(value: Any) -> str:
    """A value inside a PostgREST logic tree, double-quoted so , . : ( ) stay literal."""
    text = str(jsonable(value))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _apply_filters(query: Any, filters: tuple[Filter, ...] | list[Filter] | Any) -> Any:
    for f in filters:
        if isinstance(f, Eq):
            query = query.eq(f.column, jsonable(f.value))
        elif isinstance(f, In):
            query = query.in_(f.column, [jsonable(v) for v in f.values])
        elif isinstance(f, Is):
            query = query.is_(f.column, {None: "null", True: "true", False: "false"}[f.value])
        elif isinstance(f, Keyset):
            # PostgREST has no row comparison. `col <= v` is what an index scan can start from, and the
            # `or` only drops the rows tied at v up to the cursor's id; `col < v or (col = v and id < i)`
            # alone bounds no index, so every later page was a bitmap scan of all older rows and a sort.
            value = _literal(f.sort_value)
            query = query.lte(f.column, jsonable(f.sort_value)).or_(f"{f.column}.lt.{value},id.lt.{_literal(f.id)}")
        else:  # pragma: no cover - the Filter union is closed
            raise InvalidRequestError(f"unsupported filter {f!r}")
    return query
