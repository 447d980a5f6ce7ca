"""RestBackend: the Supabase API (PostgREST /rest/v1, Storage /storage/v1) through supabase-py.

One long-lived httpx client (HTTP/1.1, explicit timeouts) serves every scope: the service client
sends the service-role key; a user scope sends the anon key as `apikey` and the user's JWT (minted
with the project's JWT secret, or the access token the caller passed) as `Authorization`. PostgREST
verifies the token and RLS decides; nothing is filtered here.
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
    ConfigurationError,
    ConnectionError,
    InvalidRequestError,
    TimeoutError,
    auth_error,
    error_from_code,
)
from .._jwt import mint_user_token
from .._version import __version__
from ._base import Delete, Eq, Filter, In, Insert, Is, Json, Keyset, Request, Rpc, Scope, Select, Update

__all__ = ["RestBackend"]

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
        # HTTP/1.1 on purpose: pooled HTTP/2 connections gave supabase-py users "Server disconnected".
        self._http = httpx_client or httpx.Client(
            http2=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"X-Client-Info": CLIENT_INFO},
        )
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
        headers = {"X-Client-Info": CLIENT_INFO}
        if authorization:
            headers["Authorization"] = f"Bearer {authorization}"
        options = ClientOptions(
            headers=headers,
            httpx_client=self._http,
            auto_refresh_token=False,
            persist_session=False,
        )
        return create_client(self.url, api_key, options=options)

    def client_for(self, scope: Scope) -> Client:
        """The supabase-py client that sends `scope`'s credentials."""
        if scope.role == "service_role":
            return self._service
        if self._anon_key is None:
            raise ConfigurationError(
                "SUPABASE_ANON_KEY is not set: user and anonymous requests send it as their apikey "
                "(Dashboard -> Settings -> API, or `supabase status`)"
            )
        if scope.role == "anon":
            return self._client(self._anon_key, authorization=None)
        token = scope.access_token
        if token is None:
            if self._jwt_secret is None or scope.user_id is None:
                raise ConfigurationError(
                    "SUPABASE_JWT_SECRET is not set: for_user() mints the user's token with it "
                    "(Dashboard -> Settings -> API -> JWT secret), or use for_access_token(token)"
                )
            token = mint_user_token(self._jwt_secret, scope.user_id)
        return self._client(self._anon_key, authorization=token)

    # -- Backend protocol --------------------------------------------------------------------------
    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        table = self.client_for(scope).table(request.table)
        if isinstance(request, Select):
            query: Any = table.select(",".join(request.columns) or "*")
            query = _apply_filters(query, request.filters)
            for order in request.order:
                query = query.order(order.column, desc=order.descending)
            if request.limit is not None:
                query = query.limit(request.limit)
            if request.offset:
                query = query.offset(request.offset)
        elif isinstance(request, Insert):
            rows = [{k: _jsonable(v) for k, v in row.items()} for row in request.rows]
            if request.on_conflict:
                query = table.upsert(rows, on_conflict=",".join(request.on_conflict))
            else:
                query = table.insert(rows)
        elif isinstance(request, Update):
            query = _apply_filters(table.update({k: _jsonable(v) for k, v in request.values.items()}), request.filters)
        elif isinstance(request, Delete):
            query = _apply_filters(table.delete(), request.filters)
        else:  # pragma: no cover - the Request union is closed
            raise InvalidRequestError(f"unsupported request {request!r}")
        data = self._call(lambda: query.execute().data)
        return list(data or [])

    def rpc(self, request: Rpc, scope: Scope) -> Any:
        client = self.client_for(scope)
        args = {k: _jsonable(v) for k, v in request.args.items()}
        data = self._call(lambda: client.rpc(request.function, args).execute().data)
        if request.returns == "row" and isinstance(data, list):
            return data[0] if data else None
        if request.returns == "row" and isinstance(data, dict) and all(v is None for v in data.values()):
            return None
        return data

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
                raise ConnectionError("Supabase Auth answered GET /admin/users without a users list")
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
            raise ConnectionError(f"Supabase Auth failed: GET /{path} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            info: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
            code = info.get("error_code") or info.get("code")
            message = info.get("msg") or info.get("message") or f"HTTP {response.status_code}"
            raise auth_error(None if code is None else str(code), str(message), status=response.status_code)
        if not isinstance(body, dict):
            raise ConnectionError(f"Supabase Auth answered GET /{path} with something other than a JSON object")
        return body

    def storage_call(self, scope: Scope, bucket: str, operation: Callable[[Any], T]) -> T:
        """Run a storage3 operation on `bucket` as `scope`, mapping Storage errors."""
        bucket_api = self.client_for(scope).storage.from_(bucket)
        return self._call(lambda: operation(bucket_api))

    @staticmethod
    def _call(operation: Callable[[], T]) -> T:
        try:
            return operation()
        except PostgrestAPIError as exc:
            raw = exc.json()
            raise error_from_code(
                exc.code, exc.message or "request failed", details=_text(exc.details), hint=exc.hint, raw=raw
            ) from None
        except StorageApiError as exc:
            raise error_from_code(exc.code, exc.message, status=exc.status, raw=exc.to_dict()) from None
        except AuthRetryableError as exc:
            if isinstance(exc.__cause__, httpx.TimeoutException):
                raise TimeoutError(f"Supabase Auth did not answer in time: {exc.message}") from None
            raise ConnectionError(f"cannot reach Supabase Auth: {exc.message}") from None
        except AuthError as exc:
            raise auth_error(exc.code, exc.message, status=getattr(exc, "status", None)) from None
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"the Supabase API did not answer in time: {exc}") from None
        except httpx.TransportError as exc:
            raise ConnectionError(f"cannot reach the Supabase API: {exc}") from None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Json):
        return value.value
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _literal(value: Any) -> str:
    """A value inside a PostgREST logic tree, double-quoted so , . : ( ) stay literal."""
    text = str(_jsonable(value))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _apply_filters(query: Any, filters: tuple[Filter, ...] | list[Filter] | Any) -> Any:
    for f in filters:
        if isinstance(f, Eq):
            query = query.eq(f.column, _jsonable(f.value))
        elif isinstance(f, In):
            query = query.in_(f.column, [_jsonable(v) for v in f.values])
        elif isinstance(f, Is):
            query = query.is_(f.column, {None: "null", True: "true", False: "false"}[f.value])
        elif isinstance(f, Keyset):
            value = _literal(f.sort_value)
            query = query.or_(f"{f.column}.lt.{value},and({f.column}.eq.{value},id.lt.{_literal(f.id)})")
        else:  # pragma: no cover - the Filter union is closed
            raise InvalidRequestError(f"unsupported filter {f!r}")
    return query
