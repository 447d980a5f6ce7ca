"""Ids as callers pass them: a UUID or its text, checked before any round trip."""

from __future__ import annotations

from uuid import UUID

from .._exceptions import InvalidRequestError

__all__ = ["IdLike", "parse_id"]

IdLike = UUID | str


def parse_id(value: IdLike, what: str = "id") -> UUID:
    """A UUID from a UUID or its text; anything else is an `InvalidRequestError` before any round trip."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidRequestError(f"invalid {what}: {value!r} is not a UUID") from None
