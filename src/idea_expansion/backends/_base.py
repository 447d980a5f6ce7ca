"""What resources ask of a backend: small requests, executed in a scope (who is asking).

Resources build these and never know which backend runs them; both backends give them the semantics
PostgREST gives: one transaction per request, the scope's role and JWT claims, RLS deciding.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

__all__ = [
    "AsyncBackend",
    "Backend",
    "Delete",
    "Eq",
    "Filter",
    "In",
    "Insert",
    "Is",
    "Json",
    "Keyset",
    "Order",
    "Request",
    "Rpc",
    "Scope",
    "Select",
    "Update",
]

Role = Literal["service_role", "authenticated", "anon"]


@dataclass(frozen=True)
class Scope:
    """Who a request runs as: the service role, a user (by id or by their access token), or anon."""

    role: Role
    user_id: UUID | None = None
    access_token: str | None = field(default=None, repr=False)

    def claims(self, *, lifetime_seconds: int = 3600) -> dict[str, Any]:
        """The JWT claims PostgREST would expose to SQL for this scope."""
        now = int(time.time())
        claims: dict[str, Any] = {"role": self.role, "iat": now, "exp": now + lifetime_seconds}
        if self.user_id is not None:
            claims |= {"sub": str(self.user_id), "aud": "authenticated"}
        return claims


@dataclass(frozen=True)
class Json:
    """A value for a json/jsonb column (lists included), so backends encode it as JSON, not an array."""

    value: Any


@dataclass(frozen=True)
class Eq:
    column: str
    value: Any
    literal: bool = False
    """The value is one of the few a flag or an enum allows (a status, a format): the Postgres backend
    writes it into the statement instead of sending it as a parameter. A statement left with no parameter
    is planned once per connection (a prepared statement's generic plan); with one, PostgreSQL plans it anew
    on every call, and under RLS that planning cost a user's short list (archived ideas) up to twice the
    service role's."""


@dataclass(frozen=True)
class In:
    column: str
    values: Sequence[Any]


@dataclass(frozen=True)
class Is:
    """`column is null` / `is true` / `is false`."""

    column: str
    value: bool | None


@dataclass(frozen=True)
class Keyset:
    """Rows strictly after (`sort_value`, `id`) in descending (sort column, id) order: cursor paging."""

    column: str
    sort_value: Any
    id: UUID


Filter = Eq | In | Is | Keyset


@dataclass(frozen=True)
class Order:
    column: str
    descending: bool = False


@dataclass(frozen=True)
class Select:
    table: str
    filters: Sequence[Filter] = ()
    order: Sequence[Order] = ()
    limit: int | None = None
    offset: int | None = None
    columns: Sequence[str] = ()
    """Empty means every column."""


@dataclass(frozen=True)
class Insert:
    table: str
    rows: Sequence[Mapping[str, Any]]
    on_conflict: Sequence[str] = ()
    """With columns: an upsert (insert, or update the conflicting row with the given values)."""


@dataclass(frozen=True)
class Update:
    table: str
    values: Mapping[str, Any]
    filters: Sequence[Filter]


@dataclass(frozen=True)
class Delete:
    table: str
    filters: Sequence[Filter]


@dataclass(frozen=True)
class Rpc:
    function: str
    args: Mapping[str, Any]
    returns: Literal["scalar", "row", "rows", "values"] = "scalar"
    """scalar: one value; row: one composite (a dict, or None); rows: setof composite; values: setof scalar."""


Request = Select | Insert | Update | Delete


class Backend(Protocol):
    """Runs requests as a scope. Raises the `APIError` subclass chosen by `error_from_code`."""

    def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        """Run a table request; returns the selected or affected rows (as PostgREST's representation)."""
        ...

    def rpc(self, request: Rpc, scope: Scope) -> Any:
        """Call a function in `public`; returns its (scalar) result."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AsyncBackend(Protocol):
    """The async twin of `Backend`: the same requests, the same semantics and errors, awaited."""

    async def execute(self, request: Request, scope: Scope) -> list[dict[str, Any]]:
        """Run a table request; returns the selected or affected rows (as PostgREST's representation)."""
        ...

    async def rpc(self, request: Rpc, scope: Scope) -> Any:
        """Call a function in `public`; returns its (scalar) result."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
