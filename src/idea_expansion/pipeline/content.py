"""What providers return (drafts). What runs store (`OutputContent` and its models) lives in
`idea_expansion.types`; it is re-exported here so imports from `idea_expansion.pipeline.content` keep working."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from ..types import OutputFormat
from ..types.content import (
    BlogPostContent,
    BlogSection,
    GitHubRepoContent,
    ImageContent,
    Model,
    OutputContent,
    RepoFile,
    StoredImage,
    Text,
    TwitterThreadContent,
)

__all__ = [
    "BlogDraft",
    "BlogPostContent",
    "BlogSection",
    "FormatDecision",
    "GitHubRepoContent",
    "ImageContent",
    "ImageDraft",
    "JudgeVerdict",
    "OutputContent",
    "PlanDraft",
    "RepoDraft",
    "RepoFile",
    "ReviewVerdict",
    "StoredImage",
    "ThreadDraft",
    "TwitterThreadContent",
]


# -- drafts: what a provider produces ------------------------------------------------------------------
class JudgeVerdict(Model):
    """How promising an idea is."""

    score: int = Field(ge=0, le=100)
    """0-100: how worth expanding the idea is now."""
    reasoning: Text
    """Why, in a few sentences."""


class FormatDecision(Model):
    """Which format suits the idea."""

    format: OutputFormat
    """blog_post, twitter_thread, github_repo or image."""
    reasoning: Text
    """Why that format."""


class BlogDraft(Model):
    """A blog post before rendering."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    """Post title."""
    sections: list[BlogSection] = Field(min_length=2, max_length=10)
    """The body, in sections."""
    tags: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=8
    )
    """Topic tags."""
    meta_description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=160)]
    """Search-result summary, at most 160 characters."""
    social_post: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=280)]
    """A post announcing the article, at most 280 characters."""


class ThreadDraft(Model):
    """A thread before numbering."""

    posts: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=270)]] = Field(
        min_length=3, max_length=10
    )
    """3-10 posts of at most 270 characters (numbering takes the rest of 280)."""


class RepoDraft(Model):
    """A small code repository."""

    repo_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    """Desired repository name (sanitized before use)."""
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=350)]
    """One-line description (GitHub allows 350 characters)."""
    files: list[RepoFile] = Field(min_length=2, max_length=30)
    """Files, README and dependency file included."""
    topics: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,49}$")]] = Field(
        default_factory=list, max_length=20
    )
    """GitHub topics."""
    run_instructions: Text
    """How to run it."""


class ImageDraft(Model):
    """An image to make."""

    prompt: Text
    """What the image shows (a text-to-image prompt)."""
    caption: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    """Caption shown under the image."""
    headline: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    """Words on a title card."""


Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class PlanDraft(Model):
    """The plan of a blog post or a repository, made before the draft and carried into its instructions."""

    approach: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=600)]
    """The angle and audience of a post, or the kind of program and its design for a repository."""
    outline: list[Line] = Field(min_length=2, max_length=12)
    """A post's sections in order (a heading and what it says), or a repository's files (a path and its role)."""


class ReviewVerdict(Model):
    """A reviewer's verdict on a draft, against the rubric in its instructions."""

    score: int = Field(ge=0, le=100)
    """0-100 against the rubric."""
    feedback: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=400)]] = Field(
        default_factory=list, max_length=8
    )
    """Concrete changes that would raise the score, most important first."""
