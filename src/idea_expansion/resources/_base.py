"""What every resource shares: its operations written once, run by the sync and the async client alike.

An operation is a generator: it builds requests, yields each one, and gets its answer back at the
`yield` (or the backend's error raised there). It never performs I/O itself, so the same code serves
both clients; only the driver differs:

    @operation
    def get(self, idea_id: IdLike) -> Steps[Idea]:
        return (yield from self._one(Idea, Select("ideas", [Eq("id", parse_id(idea_id))]), "idea"))

`Ideas(...).get(id)` (a `SyncResource`) runs the steps on the sync backend and returns the `Idea`;
`AsyncIdeas(...).get(id)` (an `AsyncResource`) returns a coroutine that awaits each step on the async
backend. Inside an operation, another one is reused with `yield from self.get.steps(...)`.

Listings are `@paginated` operations: they take a `cursor` and return a `PageData`, which the sync
client turns into a `SyncPage` and the async one into an `AsyncPaginator` (see `_pagination`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)
from uuid import UUID

from pydantic import BaseModel, TypeAdapter, ValidationError

from .._exceptions import IdeaExpansionError, InvalidRequestError, NotFoundError
from ..backends._base import Eq, Filter, Keyset, Order, Request, Rpc, Scope, Select
from ..types.ids import IdLike, parse_id
from ._pagination import AsyncPaginator, PageData, SyncPage, decode_cursor, encode_cursor

_API_MAX_ROWS = 1000
"""The most rows one request returns: PostgREST's max_rows on Supabase (and the SDK's largest page)."""

if TYPE_CHECKING:
    from ..backends._base import AsyncBackend, Backend
    from ..backends.storage import StorageBackend
    from ..crypto import Encryptor

__all__ = [
    "AsyncClientContext",
    "AsyncResource",
    "ClientContext",
    "Effect",
    "Operations",
    "Step",
    "Steps",
    "SyncResource",
    "check_limit",
    "enum_value",
    "operation",
    "paginated",
    "to_model",
    "to_models",
    "user_filter",
]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=StrEnum)

BackendKind = Literal["rest", "postgres"]


class ClientContext(Protocol):
    """What a sync resource needs of the client that owns it. Resources sit below the client and never
    import it: the client satisfies this protocol."""

    scope: Scope

    @property
    def backend(self) -> Backend: ...

    @property
    def backend_kind(self) -> BackendKind: ...

    @property
    def storage_backend(self) -> StorageBackend: ...

    @property
    def encryptor(self) -> Encryptor: ...


class AsyncClientContext(Protocol):
    """What an async resource needs of the async client: its async backend, and a sync twin of itself
    (same settings, same scope) on which `Effect`s run in a worker thread."""

    scope: Scope

    @property
    def backend(self) -> AsyncBackend: ...

    @property
    def backend_kind(self) -> BackendKind: ...

    @property
    def encryptor(self) -> Encryptor: ...

    def sync_context(self) -> ClientContext: ...


@dataclass(frozen=True)
class Effect(Generic[T]):
    """A step that is not one database request: a file in storage, a call to Supabase Auth's admin API.
    It runs on a sync client context: the sync client's own, or, for the async client, its sync twin's
    in a worker thread (file and Auth calls are few and small; the event loop never waits on them)."""

    run: Callable[[ClientContext], T]


Step = Request | Rpc | Effect[Any]
Steps = Generator[Step, Any, T]
"""What an operation is: it yields steps, gets each one's answer, and returns its result."""


# -- the operations' base -------------------------------------------------------------------------------------
class Operations:
    """Base of every resource's operations (the sync and the async resource both inherit them)."""

    _client: ClientContext | AsyncClientContext

    def __init__(self, client: ClientContext | AsyncClientContext) -> None:
        self._client = client

    @property
    def _scope(self) -> Scope:
        return self._client.scope

    def _owner(self, user_id: IdLike | None) -> UUID:
        """The user a call is about: the given id, else the user this client acts as."""
        if user_id is not None:
            return parse_id(user_id, "user id")
        if self._scope.user_id is not None:
            return self._scope.user_id
        raise InvalidRequestError("user_id is required when the client is not acting as a user (use for_user())")

    @staticmethod
    def _rows(request: Request) -> Steps[list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = yield request
        return rows

    @staticmethod
    def _effect(run: Callable[[ClientContext], T]) -> Steps[T]:
        """Run `run` on a sync client context as one step (see `Effect`)."""
        result: T = yield Effect(run)
        return result

    @staticmethod
    def _first(request: Request, what: str) -> Steps[dict[str, Any]]:
        """The first row a request returned; none means RLS hid it (or nothing matched)."""
        rows: list[dict[str, Any]] = yield request
        if not rows:
            raise NotFoundError(f"{what} not found (or not visible to this client)", code="PGRST116")
        return rows[0]

    @classmethod
    def _one(cls, model: type[M], request: Request, what: str) -> Steps[M]:
        """The first row a request returned, as `model` (see `_first`)."""
        return to_model(model, (yield from cls._first(request, what)))

    @staticmethod
    def _many(model: type[M], request: Request) -> Steps[list[M]]:
        rows: list[dict[str, Any]] = yield request
        return to_models(model, rows)

    @staticmethod
    def _keyset_page(
        model: type[M],
        table: str,
        filters: Sequence[Filter],
        *,
        sort: str,
        kind: type[datetime] | type[int],
        limit: int,
        cursor: str | None,
    ) -> Steps[PageData[M]]:
        """One page of `table`, newest (highest `sort`) first, ties broken by id: the rows after the cursor.

        One row more than the page is asked for, so the last page is known to be the last (no empty page
        after it). A page of 1000, the most the Supabase API returns by default, is asked for as it is: a
        full page then gets a cursor, whose page may be empty, rather than a silent end."""
        check_limit(limit)
        wanted = list(filters)
        if cursor is not None:
            value, row_id = decode_cursor(cursor, sort, kind)
            wanted.append(Keyset(sort, value, row_id))
        order = [Order(sort, descending=True), Order("id", descending=True)]
        rows: list[dict[str, Any]] = yield Select(table, wanted, order=order, limit=limit + (limit < _API_MAX_ROWS))
        items = to_models(model, rows[:limit])
        more = len(rows) > limit or len(rows) == _API_MAX_ROWS
        last = items[-1] if items else None
        next_cursor = encode_cursor(sort, getattr(last, sort), last.id) if more and last is not None else None  # type: ignore[attr-defined]
        return PageData(items, next_cursor)


# -- drivers ----------------------------------------------------------------------------------------------------
def _run_sync(context: ClientContext, steps: Steps[T]) -> T:
    """Run an operation's steps on the sync backend: each answer (or error) goes back in at its `yield`."""
    backend, scope = context.backend, context.scope
    try:
        step = next(steps)
        while True:
            try:
                if isinstance(step, Rpc):
                    answer = backend.rpc(step, scope)
                elif isinstance(step, Effect):
                    answer = step.run(context)
                else:
                    answer = backend.execute(step, scope)
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(answer)
    except StopIteration as done:
        return cast("T", done.value)
    finally:
        steps.close()


async def _run_async(context: AsyncClientContext, steps: Steps[T], first: Step | None = None) -> T:
    """The same, awaiting each step on the async backend (effects: on the sync twin, in a thread).
    `first`: the first step, when the caller already took it from `steps`."""
    backend, scope = context.backend, context.scope
    try:
        step = next(steps) if first is None else first
        while True:
            try:
                if isinstance(step, Rpc):
                    answer = await backend.rpc(step, scope)
                elif isinstance(step, Effect):
                    # sync_context() too runs in the thread: the first one builds the twin (connects).
                    answer = await asyncio.to_thread(_run_effect, step, context)
                else:
                    answer = await backend.execute(step, scope)
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(answer)
    except StopIteration as done:
        return cast("T", done.value)
    finally:
        steps.close()


def _run_effect(effect: Effect[T], context: AsyncClientContext) -> T:
    return effect.run(context.sync_context())


class SyncResource(Operations):
    """A resource of the sync client: operations return their results."""

    _client: ClientContext

    def __init__(self, client: ClientContext) -> None:
        super().__init__(client)


class AsyncResource(Operations):
    """A resource of the async client: operations return coroutines (listings: `AsyncPaginator`s)."""

    _client: AsyncClientContext

    def __init__(self, client: AsyncClientContext) -> None:
        super().__init__(client)


# -- the decorators -------------------------------------------------------------------------------------------
class StepsMethod(Protocol[P, T_co]):
    """An operation reached from inside the operations: its steps, to `yield from`."""

    def steps(self, *args: P.args, **kwargs: P.kwargs) -> Steps[T_co]: ...


class SyncMethod(StepsMethod[P, T_co], Protocol[P, T_co]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T_co: ...


class AsyncMethod(StepsMethod[P, T_co], Protocol[P, T_co]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T_co]: ...


class SyncPageMethod(StepsMethod[P, "PageData[T]"], Protocol[P, T]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> SyncPage[T]: ...


class AsyncPageMethod(StepsMethod[P, "PageData[T]"], Protocol[P, T]):
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AsyncPaginator[T]: ...


@functools.cache
def _signature_of(function: Callable[..., Any]) -> inspect.Signature:
    """An operation's signature as its callers see it: without `self`, returning what the client returns."""
    signature = inspect.signature(function)
    return signature.replace(
        parameters=list(signature.parameters.values())[1:], return_annotation=inspect.Signature.empty
    )


def _bind(function: Callable[..., Steps[Any]], resource: Operations, run: Callable[..., Any]) -> Any:
    """`function` bound to `resource`: a real function (help(), IDEs and inspect see the operation's name,
    docstring and parameters) that `run`s the steps, with `.steps(...)` to reuse them in another operation."""

    def steps(*args: Any, **kwargs: Any) -> Steps[Any]:
        return function(resource, *args, **kwargs)

    def call(*args: Any, **kwargs: Any) -> Any:
        return run(resource, args, kwargs)

    bound: Any = functools.update_wrapper(call, function)
    bound.__signature__ = _signature_of(function)
    bound.steps = steps
    return bound


def _bound_to(
    resource: Operations,
    function: Callable[..., Steps[Any]],
    run_sync: Callable[..., Any],
    run_async: Callable[..., Any],
) -> Any:
    """What an operation is on `resource`: run by the sync or the async driver, as the resource's client is."""
    if isinstance(resource, SyncResource):
        bound = _bind(function, resource, run_sync)
    elif isinstance(resource, AsyncResource):
        bound = _bind(function, resource, run_async)
    else:
        return _bind(function, resource, _steps_only)
    # Kept on the resource (which the client keeps): the next access finds it there, not here.
    resource.__dict__[function.__name__] = bound
    return bound


def _steps_only(resource: Operations, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:  # pragma: no cover
    raise AssertionError("an operation reached from inside the operations is only `yield from`-ed")


class operation(Generic[P, T]):  # noqa: N801 - a decorator, named like one
    """Marks a generator method as an operation of both clients (see the module docstring)."""

    def __init__(self, function: Callable[Concatenate[Any, P], Steps[T]]) -> None:
        self._function = function
        functools.update_wrapper(cast("Any", self), function)

    def _run_sync(self, resource: SyncResource, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        return _run_sync(resource._client, self._function(resource, *args, **kwargs))

    def _run_async(
        self, resource: AsyncResource, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, T]:
        return _run_async(resource._client, self._function(resource, *args, **kwargs))

    @overload
    def __get__(self, resource: None, owner: type[Any]) -> operation[P, T]: ...
    @overload
    def __get__(self, resource: SyncResource, owner: type[Any] | None = None) -> SyncMethod[P, T]: ...
    @overload
    def __get__(self, resource: AsyncResource, owner: type[Any] | None = None) -> AsyncMethod[P, T]: ...
    @overload
    def __get__(self, resource: Operations, owner: type[Any] | None = None) -> StepsMethod[P, T]: ...
    def __get__(self, resource: Operations | None, owner: type[Any] | None = None) -> Any:
        return self if resource is None else _bound_to(resource, self._function, self._run_sync, self._run_async)


class paginated(Generic[P, T]):  # noqa: N801 - a decorator, named like one
    """Marks a listing: a generator method that takes `cursor` and returns a `PageData[T]`. The sync
    client returns a `SyncPage[T]`, the async client an `AsyncPaginator[T]`."""

    def __init__(self, function: Callable[Concatenate[Any, P], Steps[PageData[T]]]) -> None:
        self._function = function
        functools.update_wrapper(cast("Any", self), function)

    def _again(
        self, resource: Operations, args: tuple[Any, ...], kwargs: dict[str, Any], cursor: str | None
    ) -> Steps[PageData[T]]:
        """The same listing's steps from `cursor` on."""
        return self._function(resource, *args, **{**kwargs, "cursor": cursor})

    def _run_sync(self, resource: SyncResource, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SyncPage[T]:
        def fetch(cursor: str | None) -> PageData[T]:
            return _run_sync(resource._client, self._again(resource, args, kwargs, cursor))

        return SyncPage(_run_sync(resource._client, self._function(resource, *args, **kwargs)), fetch)

    def _run_async(self, resource: AsyncResource, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncPaginator[T]:
        # The arguments are checked now (the steps run up to their first request), as the sync client
        # checks them at the call: a bad argument fails where the call is written, not at a later `async for`.
        first_steps = self._function(resource, *args, **kwargs)
        ready: PageData[T] | None = None
        try:
            first_step: Step | None = next(first_steps)
        except StopIteration as done:  # an answer without a request
            ready, first_step = cast("PageData[T]", done.value), None

        begun = [] if first_step is None else [(first_steps, first_step)]

        async def fetch(cursor: str | None) -> PageData[T]:
            return await _run_async(resource._client, self._again(resource, args, kwargs, cursor))

        async def first() -> PageData[T]:
            if ready is not None:
                return ready
            if begun:  # the steps begun at the call run once; awaiting (or iterating) again asks again
                steps, step = begun.pop()
                return await _run_async(resource._client, steps, step)
            return await _run_async(resource._client, self._function(resource, *args, **kwargs))

        return AsyncPaginator(first, fetch)

    @overload
    def __get__(self, resource: None, owner: type[Any]) -> paginated[P, T]: ...
    @overload
    def __get__(self, resource: SyncResource, owner: type[Any] | None = None) -> SyncPageMethod[P, T]: ...
    @overload
    def __get__(self, resource: AsyncResource, owner: type[Any] | None = None) -> AsyncPageMethod[P, T]: ...
    @overload
    def __get__(self, resource: Operations, owner: type[Any] | None = None) -> StepsMethod[P, PageData[T]]: ...
    def __get__(self, resource: Operations | None, owner: type[Any] | None = None) -> Any:
        return self if resource is None else _bound_to(resource, self._function, self._run_sync, self._run_async)


# -- shared helpers ---------------------------------------------------------------------------------------------
def check_limit(limit: int) -> int:
    """A page size: 1 to 1000 rows."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit must be an integer from 1 to 1000, not {limit!r}")
    return limit


def enum_value(kind: type[E], value: E | str, what: str) -> str:
    """An enum argument's value; anything else is an `InvalidRequestError` naming the choices."""
    try:
        return kind(value).value
    except ValueError:
        raise InvalidRequestError(f"{what} must be one of {', '.join(k.value for k in kind)}, not {value!r}") from None


def user_filter(user_id: IdLike | None) -> list[Filter]:
    """Narrow a listing to one user when asked (the service client); RLS already narrows a user client."""
    return [] if user_id is None else [Eq("user_id", parse_id(user_id, "user id"))]


def to_model(model: type[M], row: dict[str, Any]) -> M:
    """Validate one row; a row the model cannot hold is a bug (models and migrations drifted)."""
    try:
        return model.model_validate(row)
    except ValidationError as exc:
        raise IdeaExpansionError(f"unexpected {model.__name__} row from the database: {exc}") from exc


def to_models(model: type[M], rows: list[dict[str, Any]]) -> list[M]:
    """Validate rows, all in one call into pydantic's core: the same validation as `to_model` per row,
    without its per-row Python overhead (a third less time for a page of 50)."""
    try:
        return cast("list[M]", _list_adapter(model).validate_python(rows))
    except ValidationError as exc:
        raise IdeaExpansionError(f"unexpected {model.__name__} row from the database: {exc}") from exc


@functools.cache
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]
