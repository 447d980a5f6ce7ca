"""`client.executions`, `client.outputs`, `client.blog_posts`: what runs produced. Users read their own.
Only the run lifecycle (`client.expansions`, the database's run functions) writes executions and outputs
and creates blog posts; owners may edit a post's metadata and visibility."""

from __future__ import annotations

import builtins

from ..backends._base import Eq, Order, Select, Update
from ..types import BlogPost, Execution, ExecutionStatus, Output, OutputFormat
from ..types.ids import IdLike, parse_id
from ._base import Resource, check_limit, user_filter


class Executions(Resource):
    """Pipeline runs (`public.executions`)."""

    def get(self, execution_id: IdLike) -> Execution:
        """A run by id."""
        return self._one(
            Execution, Select("executions", [Eq("id", parse_id(execution_id, "execution id"))]), "execution"
        )

    def list(
        self, *, status: ExecutionStatus | str | None = None, limit: int = 50, user_id: IdLike | None = None
    ) -> builtins.list[Execution]:
        """Runs, newest first."""
        filters = user_filter(user_id)
        if status is not None:
            filters.append(Eq("status", ExecutionStatus(status).value))
        return self._many(
            Execution,
            Select("executions", filters, order=[Order("started_at", descending=True)], limit=check_limit(limit)),
        )


class Outputs(Resource):
    """Generated content (`public.outputs`)."""

    def get(self, output_id: IdLike) -> Output:
        """An output by id."""
        return self._one(Output, Select("outputs", [Eq("id", parse_id(output_id, "output id"))]), "output")

    def list(
        self,
        *,
        execution_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        limit: int = 50,
        user_id: IdLike | None = None,
    ) -> builtins.list[Output]:
        """Outputs, newest first."""
        filters = user_filter(user_id)
        if execution_id is not None:
            filters.append(Eq("execution_id", parse_id(execution_id, "execution id")))
        if format is not None:
            filters.append(Eq("format", OutputFormat(format).value))
        return self._many(
            Output, Select("outputs", filters, order=[Order("created_at", descending=True)], limit=check_limit(limit))
        )


class BlogPosts(Resource):
    """Blog posts (`public.blog_posts`). Public posts are readable by anyone, signed in or not."""

    def get(self, post_id: IdLike) -> BlogPost:
        """A post by id."""
        return self._one(BlogPost, Select("blog_posts", [Eq("id", parse_id(post_id, "post id"))]), "blog post")

    def get_by_slug(self, slug: str, *, user_id: IdLike | None = None) -> BlogPost:
        """A post by its slug (unique per user)."""
        return self._one(
            BlogPost,
            Select("blog_posts", [Eq("user_id", self._owner(user_id)), Eq("slug", slug)]),
            f"blog post {slug!r}",
        )

    def list(self, *, user_id: IdLike | None = None, limit: int = 50) -> builtins.list[BlogPost]:
        """Posts visible to this client, newest first (a user sees their own and public ones)."""
        filters = user_filter(user_id)
        return self._many(
            BlogPost,
            Select("blog_posts", filters, order=[Order("created_at", descending=True)], limit=check_limit(limit)),
        )

    def list_public(self, *, limit: int = 50) -> builtins.list[BlogPost]:
        """Public posts of every user, newest first."""
        return self._many(
            BlogPost,
            Select(
                "blog_posts",
                [Eq("is_public", True)],
                order=[Order("published_at", descending=True)],
                limit=check_limit(limit),
            ),
        )

    def update(
        self,
        post_id: IdLike,
        *,
        title: str | None = None,
        slug: str | None = None,
        meta_description: str | None = None,
        tags: builtins.list[str] | None = None,
        is_public: bool | None = None,
    ) -> BlogPost:
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
            return self.get(post_id)
        return self._one(BlogPost, Update("blog_posts", values, [Eq("id", parse_id(post_id, "post id"))]), "blog post")
