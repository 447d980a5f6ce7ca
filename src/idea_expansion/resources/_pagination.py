"""Pages of a listing, with a cursor, in the manner of openai-python's pagination.

    page = client.ideas.list(limit=50)        # SyncPage[Idea]: one request
    page.data, page.next_cursor               # this page; the cursor of the next (None on the last)
    for idea in client.ideas.list():          # every idea, page after page, as they are needed
        ...
    for page in client.ideas.list().iter_pages(): ...

    page = await aclient.ideas.list()          # AsyncPage[Idea]
    async for idea in aclient.ideas.list():    # every idea (AsyncPaginator)
        ...

A cursor is keyset paging (the sort key and id of the last row), so a page never skips or repeats a row
when rows are added meanwhile, and nothing is ever truncated: the last page is the one without a cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from .._exceptions import InvalidRequestError

__all__ = ["AsyncPage", "AsyncPaginator", "PageData", "SyncPage", "decode_cursor", "encode_cursor"]

T = TypeVar("T")


@dataclass(frozen=True)
class PageData(Generic[T]):
    """What a listing's steps return: the rows of one page and the cursor of the next (None: the last)."""

    items: list[T]
    next_cursor: str | None


def _no_next_page() -> InvalidRequestError:
    return InvalidRequestError("this is the last page: check has_next_page() before asking for the next one")


class SyncPage(Generic[T]):
    """One page of a listing. Iterating it yields every item of this page and of the pages after it."""

    __slots__ = ("_fetch", "data", "next_cursor")

    def __init__(self, page: PageData[T], fetch: Callable[[str | None], PageData[T]]) -> None:
        self.data: list[T] = page.items
        """The items of this page."""
        self.next_cursor: str | None = page.next_cursor
        """Pass it as `cursor=` to the same listing for the next page; None on the last page."""
        self._fetch = fetch

    def has_next_page(self) -> bool:
        return self.next_cursor is not None

    def get_next_page(self) -> SyncPage[T]:
        """The next page (one request). Raises `InvalidRequestError` on the last page."""
        if self.next_cursor is None:
            raise _no_next_page()
        return SyncPage(self._fetch(self.next_cursor), self._fetch)

    def iter_pages(self) -> Iterator[SyncPage[T]]:
        """This page and every page after it, fetched one at a time as the loop asks."""
        page: SyncPage[T] = self
        while True:
            yield page
            if not page.has_next_page():
                return
            page = page.get_next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data

    def __repr__(self) -> str:
        return f"SyncPage(items={len(self.data)}, next_cursor={self.next_cursor!r})"


class AsyncPage(Generic[T]):
    """One page of a listing of the async client. `async for` yields every item of this page and after."""

    __slots__ = ("_fetch", "data", "next_cursor")

    def __init__(self, page: PageData[T], fetch: Callable[[str | None], Awaitable[PageData[T]]]) -> None:
        self.data: list[T] = page.items
        self.next_cursor: str | None = page.next_cursor
        self._fetch = fetch

    def has_next_page(self) -> bool:
        return self.next_cursor is not None

    async def get_next_page(self) -> AsyncPage[T]:
        """The next page (one request). Raises `InvalidRequestError` on the last page."""
        if self.next_cursor is None:
            raise _no_next_page()
        return AsyncPage(await self._fetch(self.next_cursor), self._fetch)

    async def iter_pages(self) -> AsyncIterator[AsyncPage[T]]:
        page: AsyncPage[T] = self
        while True:
            yield page
            if not page.has_next_page():
                return
            page = await page.get_next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.data:
                yield item

    def __repr__(self) -> str:
        return f"AsyncPage(items={len(self.data)}, next_cursor={self.next_cursor!r})"


class AsyncPaginator(Generic[T]):
    """What an async listing returns: `await` it for the first page, or `async for` over every item."""

    __slots__ = ("_fetch", "_first")

    def __init__(
        self, first: Callable[[], Awaitable[PageData[T]]], fetch: Callable[[str | None], Awaitable[PageData[T]]]
    ) -> None:
        self._first = first
        self._fetch = fetch

    async def _page(self) -> AsyncPage[T]:
        return AsyncPage(await self._first(), self._fetch)

    def __await__(self) -> Generator[Any, None, AsyncPage[T]]:
        return self._page().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._page()
        async for item in page:
            yield item


# -- cursors ------------------------------------------------------------------------------------------------------
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def encode_cursor(sort: str, value: datetime | int | None, row_id: UUID) -> str:
    """The cursor after a row: which ordering it belongs to, the row's sort value and id (opaque to callers)."""
    shown = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps({"k": sort, "v": shown, "id": str(row_id)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, kind: type[datetime] | type[int]) -> tuple[datetime | int, UUID]:
    """The sort value and id a cursor holds. Raises `InvalidRequestError` for anything but a cursor this
    listing, in this ordering, handed out."""
    try:
        if not isinstance(cursor, str) or len(cursor) > 512:
            raise ValueError("not a cursor")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or data.get("k") != sort:
            raise ValueError(f"a cursor of another ordering (this listing is ordered by {sort})")
        raw, row_id = data["v"], data["id"]
        if not isinstance(row_id, str):  # UUID(5) is an AttributeError, not a ValueError
            raise ValueError("a malformed row id")
        value: datetime | int
        # No sort column is nullable (a public post always has published_at), so no cursor holds a null: on
        # direct Postgres `(col, id) < (NULL, id)` matches nothing and the walk would end without a word.
        if kind is datetime and isinstance(raw, str):
            value = datetime.fromisoformat(raw)
            if value.tzinfo is None:  # compared in the session's time zone: a page that depends on the server
                raise ValueError("a time without its time zone")
        elif kind is int and isinstance(raw, int) and not isinstance(raw, bool):
            # Beyond bigint psycopg sends numeric, and `(int column, id) < (numeric, id)` is no index
            # condition: the listing would read every row it can see to return none.
            if not _BIGINT_MIN <= raw <= _BIGINT_MAX:
                raise ValueError("a sort value beyond bigint")
            value = raw
        else:
            raise ValueError("a malformed sort value")
        return value, UUID(row_id)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"invalid cursor: {exc}") from None
