"""`client.ideas`: the raw ideas a user keeps."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Literal

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Delete, Eq, Filter, Insert, Json, Select, Update
from ..types import Idea, IdeaCreate, IdeaStatus, IdeaUpdate
from ..types.ids import IdLike, parse_id
from ..types.params import parse_params
from ._base import AsyncResource, Operations, Steps, SyncResource, enum_value, operation, paginated, user_filter
from ._pagination import PageData

__all__ = ["AsyncIdeas", "Ideas"]

SortKey = Literal["created_at", "priority_score"]


class _IdeaOperations(Operations):
    """Ideas (`public.ideas`). Status changes follow the database's rules:
    pending -> expanded | archived, expanded -> archived."""

    @operation
    def create(
        self,
        *,
        title: str,
        description: str | None = None,
        bullets: builtins.list[str] | None = None,
        external_links: builtins.list[str] | None = None,
        user_id: IdLike | None = None,
    ) -> Steps[Idea]:
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
        return (yield from self._one(Idea, Insert("ideas", [row]), "idea"))

    @operation
    def get(self, idea_id: IdLike) -> Steps[Idea]:
        """An idea by id. Raises `NotFoundError` when it does not exist or is not the caller's."""
        return (yield from self._one(Idea, Select("ideas", [Eq("id", parse_id(idea_id, "idea id"))]), "idea"))

    @paginated
    def list(
        self,
        *,
        status: IdeaStatus | str | None = None,
        order_by: SortKey = "created_at",
        limit: int = 50,
        cursor: str | None = None,
        user_id: IdLike | None = None,
    ) -> Steps[PageData[Idea]]:
        """Ideas, newest (or highest priority) first, a page at a time: iterate the page for every idea, or
        pass its `next_cursor` back as `cursor`. A user client sees only its own; the service client sees
        everyone's unless `user_id` is given.

        Raises:
            InvalidRequestError: an unknown status or ordering, a limit outside 1-1000, a foreign cursor.
        """
        if order_by not in ("created_at", "priority_score"):
            raise InvalidRequestError(f"order_by must be 'created_at' or 'priority_score', not {order_by!r}")
        filters: builtins.list[Filter] = user_filter(user_id)
        if status is not None:
            filters.append(Eq("status", enum_value(IdeaStatus, status, "status"), literal=True))
        kind = datetime if order_by == "created_at" else int
        return (
            yield from self._keyset_page(Idea, "ideas", filters, sort=order_by, kind=kind, limit=limit, cursor=cursor)
        )

    @operation
    def update(
        self,
        idea_id: IdLike,
        *,
        title: str | None = None,
        description: str | None = None,
        bullets: builtins.list[str] | None = None,
        external_links: builtins.list[str] | None = None,
    ) -> Steps[Idea]:
        """Change an idea's text; fields left None stay as they are."""
        params = parse_params(
            IdeaUpdate, title=title, description=description, bullets=bullets, external_links=external_links
        )
        values: dict[str, Any] = params.model_dump(exclude_none=True)
        for key in ("bullets", "external_links"):
            if key in values:
                values[key] = Json(values[key])
        if not values:
            return (yield from self.get.steps(idea_id))
        return (yield from self._one(Idea, Update("ideas", values, [Eq("id", parse_id(idea_id, "idea id"))]), "idea"))

    @operation
    def archive(self, idea_id: IdLike) -> Steps[Idea]:
        """Archive an idea (from pending or expanded). Archiving twice is harmless.

        Raises:
            InvalidRequestError: never from these states; the database names the transition if it refuses.
        """
        return (yield from self._set_status(idea_id, IdeaStatus.ARCHIVED))

    @operation
    def mark_expanded(self, idea_id: IdLike) -> Steps[Idea]:
        """Mark a pending idea expanded (the pipeline does this when a run succeeds)."""
        return (yield from self._set_status(idea_id, IdeaStatus.EXPANDED))

    @operation
    def delete(self, idea_id: IdLike) -> Steps[None]:
        """Delete an idea. Its runs and outputs stay, no longer linked to it."""
        if not (yield from self._rows(Delete("ideas", [Eq("id", parse_id(idea_id, "idea id"))]))):
            raise NotFoundError("idea not found (or not visible to this client)", code="PGRST116")

    def _set_status(self, idea_id: IdLike, status: IdeaStatus) -> Steps[Idea]:
        request = Update("ideas", {"status": status.value}, [Eq("id", parse_id(idea_id, "idea id"))])
        return (yield from self._one(Idea, request, "idea"))


class Ideas(_IdeaOperations, SyncResource):
    """Ideas (`public.ideas`), on the sync client."""


class AsyncIdeas(_IdeaOperations, AsyncResource):
    """Ideas (`public.ideas`), on the async client: the same operations, awaited."""
