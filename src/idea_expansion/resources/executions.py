"""`client.executions`, `client.outputs`, `client.blog_posts`: what runs produced. Users read their own.
Only the run lifecycle (`client.expansions`, the database's run functions) writes executions and outputs
and creates blog posts; owners may edit a post's metadata and visibility."""

from __future__ import annotations

import builtins
from datetime import datetime

from .._exceptions import InvalidRequestError
from ..backends._base import Eq, Filter, Select, Update
from ..types import BlogPost, Execution, ExecutionStatus, Output, OutputFormat
from ..types.ids import IdLike, parse_id
from ._base import AsyncResource, Operations, Steps, SyncResource, enum_value, operation, paginated, user_filter
from ._pagination import PageData

__all__ = ["AsyncBlogPosts", "AsyncExecutions", "AsyncOutputs", "BlogPosts", "Executions", "Outputs"]


class _ExecutionOperations(Operations):
    """Pipeline runs (`public.executions`)."""

    @operation
    def get(self, execution_id: IdLike) -> Steps[Execution]:
        """A run by id."""
        request = Select("executions", [Eq("id", parse_id(execution_id, "execution id"))])
        return (yield from self._one(Execution, request, "execution"))

    @paginated
    def list(
        self,
        *,
        status: ExecutionStatus | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        user_id: IdLike | None = None,
    ) -> Steps[PageData[Execution]]:
        """Runs, newest first, a page at a time (iterate the page for every run).

        Raises:
            InvalidRequestError: an unknown status, a limit outside 1-1000, a foreign cursor.
        """
        filters: builtins.list[Filter] = user_filter(user_id)
        if status is not None:
            filters.append(Eq("status", enum_value(ExecutionStatus, status, "status"), literal=True))
        return (
            yield from self._keyset_page(
                Execution, "executions", filters, sort="started_at", kind=datetime, limit=limit, cursor=cursor
            )
        )


class _OutputOperations(Operations):
    """Generated content (`public.outputs`)."""

    @operation
    def get(self, output_id: IdLike) -> Steps[Output]:
        """An output by id."""
        return (yield from self._one(Output, Select("outputs", [Eq("id", parse_id(output_id, "output id"))]), "output"))

    @paginated
    def list(
        self,
        *,
        execution_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        user_id: IdLike | None = None,
    ) -> Steps[PageData[Output]]:
        """Outputs, newest first, a page at a time (iterate the page for every output).

        Raises:
            InvalidRequestError: an unknown format, a limit outside 1-1000, a foreign cursor.
        """
        filters: builtins.list[Filter] = user_filter(user_id)
        if execution_id is not None:
            filters.append(Eq("execution_id", parse_id(execution_id, "execution id")))
        if format is not None:
            filters.append(Eq("format", enum_value(OutputFormat, format, "format"), literal=True))
        return (
            yield from self._keyset_page(
                Output, "outputs", filters, sort="created_at", kind=datetime, limit=limit, cursor=cursor
            )
        )


class _BlogPostOperations(Operations):
    """Blog posts (`public.blog_posts`). Public posts are readable by anyone, signed in or not."""

    @operation
    def get(self, post_id: IdLike) -> Steps[BlogPost]:
        """A post by id."""
        request = Select("blog_posts", [Eq("id", parse_id(post_id, "post id"))])
        return (yield from self._one(BlogPost, request, "blog post"))

    @operation
    def get_by_output(self, output_id: IdLike) -> Steps[BlogPost]:
        """The post that renders a blog-post output (one row: an output has at most one post)."""
        request = Select("blog_posts", [Eq("output_id", parse_id(output_id, "output id"))], limit=1)
        return (yield from self._one(BlogPost, request, "blog post of that output"))

    @operation
    def get_by_slug(self, slug: str, *, user_id: IdLike | None = None) -> Steps[BlogPost]:
        """A post by its slug (unique per user)."""
        if not isinstance(slug, str) or not slug:
            raise InvalidRequestError(f"a slug is a non-empty string, not {slug!r}")
        request = Select("blog_posts", [Eq("user_id", self._owner(user_id)), Eq("slug", slug)])
        return (yield from self._one(BlogPost, request, f"blog post {slug!r}"))

    @paginated
    def list(
        self, *, user_id: IdLike | None = None, limit: int = 50, cursor: str | None = None
    ) -> Steps[PageData[BlogPost]]:
        """Posts visible to this client, newest first (a user sees their own and public ones), a page at
        a time (iterate the page for every post)."""
        return (
            yield from self._keyset_page(
                BlogPost,
                "blog_posts",
                user_filter(user_id),
                sort="created_at",
                kind=datetime,
                limit=limit,
                cursor=cursor,
            )
        )

    @paginated
    def list_public(self, *, limit: int = 50, cursor: str | None = None) -> Steps[PageData[BlogPost]]:
        """Public posts of every user, most recently published first, a page at a time."""
        return (
            yield from self._keyset_page(
                BlogPost,
                "blog_posts",
                [Eq("is_public", True, literal=True)],
                sort="published_at",
                kind=datetime,
                limit=limit,
                cursor=cursor,
            )
        )

    @operation
    def update(
        self,
        post_id: IdLike,
        *,
        title: str | None = None,
        slug: str | None = None,
        meta_description: str | None = None,
        tags: builtins.list[str] | None = None,
        is_public: bool | None = None,
    ) -> Steps[BlogPost]:
        """Change a post's metadata or visibility (its owner, or the service client)."""
        values = {
            k: v
            for k, v in {
                "title": title,
                "slug": slug,
                "meta_description": meta_description,
                "tags": tags,
                "is_public": is_public,
            }.items()
            if v is not None
        }
        if not values:
            return (yield from self.get.steps(post_id))
        request = Update("blog_posts", values, [Eq("id", parse_id(post_id, "post id"))])
        return (yield from self._one(BlogPost, request, "blog post"))


class Executions(_ExecutionOperations, SyncResource):
    """Pipeline runs (`public.executions`)."""


class AsyncExecutions(_ExecutionOperations, AsyncResource):
    """Pipeline runs (`public.executions`), on the async client."""


class Outputs(_OutputOperations, SyncResource):
    """Generated content (`public.outputs`)."""


class AsyncOutputs(_OutputOperations, AsyncResource):
    """Generated content (`public.outputs`), on the async client."""


class BlogPosts(_BlogPostOperations, SyncResource):
    """Blog posts (`public.blog_posts`). Public posts are readable by anyone, signed in or not."""


class AsyncBlogPosts(_BlogPostOperations, AsyncResource):
    """Blog posts (`public.blog_posts`), on the async client."""
