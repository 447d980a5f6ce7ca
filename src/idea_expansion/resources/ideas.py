"""`client.ideas`: the raw ideas a user keeps."""

from __future__ import annotations

import base64
import builtins
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Delete, Eq, Insert, Json, Keyset, Order, Select, Update
from ..types import Idea, IdeaCreate, IdeaStatus, IdeaUpdate
from ..types.ids import IdLike, parse_id
from ..types.params import parse_params
from ._base import Resource, check_limit, user_filter

SortKey = Literal["created_at", "priority_score"]


@dataclass(frozen=True)
class IdeaPage:
    """One page of ideas and the cursor of the next page (None on the last one)."""

    items: list[Idea]
    next_cursor: str | None


class Ideas(Resource):
    """Ideas (`public.ideas`). Status changes follow the database's rules:
    pending -> expanded | archived, expanded -> archived."""

    def create(
        self,
        *,
        title: str,
        description: str | None = None,
        bullets: builtins.list[str] | None = None,
        external_links: builtins.list[str] | None = None,
        user_id: IdLike | None = None,
    ) -> Idea:
        """Create a pending idea for the user this client acts as (or `user_id`, on the service client).

        Raises:
            InvalidRequestError: empty or over-long title (200), description (10,000), too many bullets (50)
                or links (20).
        """
        params = parse_params(
            IdeaCreate,
            title=title,
            description=description,
            bullets=bullets or [],
            external_links=external_links or [],
        )
        row = {
            "user_id": self._owner(user_id),
            "title": params.title,
            "description": params.description,
            "bullets": Json(params.bullets),
            "external_links": Json(params.external_links),
        }
        return self._one(Idea, Insert("ideas", [row]), "idea")

    def get(self, idea_id: IdLike) -> Idea:
        """An idea by id. Raises `NotFoundError` when it does not exist or is not the caller's."""
        return self._one(Idea, Select("ideas", [Eq("id", parse_id(idea_id, "idea id"))]), "idea")

    def list(
        self,
        *,
        status: IdeaStatus | str | None = None,
        order_by: SortKey = "created_at",
        limit: int = 50,
        offset: int = 0,
        user_id: IdLike | None = None,
    ) -> builtins.list[Idea]:
        """Ideas, newest (or highest priority) first. A user client sees only its own; the service
        client sees everyone's unless `user_id` is given."""
        return self._many(Idea, self._select(status, order_by, limit, offset, user_id, cursor=None))

    def page(
        self,
        *,
        cursor: str | None = None,
        status: IdeaStatus | str | None = None,
        order_by: SortKey = "created_at",
        limit: int = 50,
        user_id: IdLike | None = None,
    ) -> IdeaPage:
        """Cursor paging (stable under inserts, unlike offsets): pass `next_cursor` back for the next page."""
        keyset = _decode_cursor(cursor, order_by) if cursor else None
        items = self._many(Idea, self._select(status, order_by, limit, 0, user_id, cursor=keyset))
        next_cursor = _encode_cursor(items[-1], order_by) if len(items) == limit else None
        return IdeaPage(items, next_cursor)

    def update(
        self,
        idea_id: IdLike,
        *,
        title: str | None = None,
        description: str | None = None,
        bullets: builtins.list[str] | None = None,
        external_links: builtins.list[str] | None = None,
    ) -> Idea:
        """Change an idea's text; fields left None stay as they are."""
        params = parse_params(
            IdeaUpdate, title=title, description=description, bullets=bullets, external_links=external_links
        )
        values: dict[str, Any] = params.model_dump(exclude_none=True)
        for key in ("bullets", "external_links"):
            if key in values:
                values[key] = Json(values[key])
        if not values:
            return self.get(idea_id)
        return self._one(Idea, Update("ideas", values, [Eq("id", parse_id(idea_id, "idea id"))]), "idea")

    def archive(self, idea_id: IdLike) -> Idea:
        """Archive an idea (from pending or expanded). Archiving twice is harmless.

        Raises:
            InvalidRequestError: never from these states; the database names the transition if it refuses.
        """
        return self._set_status(idea_id, IdeaStatus.ARCHIVED)

    def mark_expanded(self, idea_id: IdLike) -> Idea:
        """Mark a pending idea expanded (the pipeline does this when a run succeeds)."""
        return self._set_status(idea_id, IdeaStatus.EXPANDED)

    def delete(self, idea_id: IdLike) -> None:
        """Delete an idea. Its runs and outputs stay, no longer linked to it."""
        if not self._rows(Delete("ideas", [Eq("id", parse_id(idea_id, "idea id"))])):
            raise NotFoundError("idea not found (or not visible to this client)", code="PGRST116")

    def _set_status(self, idea_id: IdLike, status: IdeaStatus) -> Idea:
        return self._one(
            Idea, Update("ideas", {"status": status.value}, [Eq("id", parse_id(idea_id, "idea id"))]), "idea"
        )

    def _select(
        self,
        status: IdeaStatus | str | None,
        order_by: SortKey,
        limit: int,
        offset: int,
        user_id: IdLike | None,
        *,
        cursor: Keyset | None,
    ) -> Select:
        if order_by not in ("created_at", "priority_score"):
            raise InvalidRequestError(f"order_by must be 'created_at' or 'priority_score', not {order_by!r}")
        check_limit(limit)
        if offset < 0:
            raise InvalidRequestError(f"offset must not be negative, not {offset}")
        filters = user_filter(user_id)
        if status is not None:
            try:
                filters.append(Eq("status", IdeaStatus(status).value))
            except ValueError:
                raise InvalidRequestError(
                    f"status must be one of {', '.join(s.value for s in IdeaStatus)}, not {status!r}"
                ) from None
        if cursor is not None:
            filters.append(cursor)
        return Select(
            "ideas",
            filters,
            order=[Order(order_by, descending=True), Order("id", descending=True)],
            limit=limit,
            offset=offset,
        )


def _encode_cursor(last: Idea, order_by: SortKey) -> str:
    value = last.created_at.isoformat() if order_by == "created_at" else last.priority_score
    raw = json.dumps({"k": order_by, "v": value, "id": str(last.id)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, order_by: SortKey) -> Keyset:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["k"] != order_by:
            raise ValueError("cursor of another ordering")
        value: Any = datetime.fromisoformat(data["v"]) if order_by == "created_at" else int(data["v"])
        return Keyset(order_by, value, UUID(data["id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequestError(f"invalid cursor: {exc}") from None
