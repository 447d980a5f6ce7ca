"""Typed content: what providers return (drafts) and what runs store in `outputs.content`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..types import OutputFormat

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
    "RepoDraft",
    "RepoFile",
    "StoredImage",
    "ThreadDraft",
    "TwitterThreadContent",
    "parse_content",
]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


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


class BlogSection(Model):
    heading: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    """Section heading."""
    paragraphs: list[Text] = Field(min_length=1, max_length=12)
    """Paragraphs (Markdown inline syntax allowed)."""


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


class RepoFile(Model):
    path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-/]{1,200}$")]
    """Relative path inside the repository."""
    content: str
    """File content."""

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
            raise ValueError(f"{path!r} must be a relative path without empty, '.' or '..' segments")
        return path


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


# -- stored content: outputs.content -------------------------------------------------------------------
class StoredImage(Model):
    storage_path: str
    """Path in the images bucket: <user_id>/<execution_id>/<file>."""
    url: str
    """Public URL of the object."""
    width: int
    """Pixels."""
    height: int
    """Pixels."""
    mime_type: str
    """Content type."""


class BlogPostContent(Model):
    format: Literal["blog_post"] = "blog_post"
    title: str
    """Post title."""
    slug: str
    """URL slug (made unique per user when the post is saved)."""
    sections: list[BlogSection]
    """The body, in sections."""
    markdown: str
    """The post in Markdown."""
    html: str
    """The post rendered to HTML (raw HTML in the Markdown is escaped, not passed through)."""
    meta_description: str = Field(max_length=160)
    """At most 160 characters."""
    tags: list[str]
    """Topic tags."""
    word_count: int
    """Words in the body."""
    reading_time_minutes: int
    """At 200 words a minute, at least 1."""
    social_post: str = Field(max_length=280)
    """Announcement post, at most 280 characters."""
    cover_image: StoredImage | None = None
    """The title card, when it was made."""
    generated_by: str
    """Which provider wrote it (offline templates say so)."""


class TwitterThreadContent(Model):
    format: Literal["twitter_thread"] = "twitter_thread"
    posts: list[str] = Field(min_length=3, max_length=10)
    """Numbered posts ("1/5 ..."), each at most 280 characters."""
    generated_by: str
    """Which provider wrote it."""

    @field_validator("posts")
    @classmethod
    def _fit(cls, posts: list[str]) -> list[str]:
        for number, post in enumerate(posts, 1):
            if len(post) > 280:
                raise ValueError(f"post {number} is {len(post)} characters; the limit is 280")
        return posts


class GitHubRepoContent(Model):
    format: Literal["github_repo"] = "github_repo"
    repo_name: str
    """Sanitized repository name."""
    description: str
    """Repository description."""
    files: list[RepoFile]
    """Files committed together."""
    topics: list[str]
    """GitHub topics."""
    run_instructions: str
    """How to run it."""
    generated_by: str
    """Which provider wrote it."""


class ImageContent(Model):
    format: Literal["image"] = "image"
    prompt: str
    """What the image shows."""
    caption: str
    """Caption."""
    image: StoredImage
    """Where the PNG is stored (never a data URL)."""
    generated_by: str
    """Which provider made it."""


OutputContent = BlogPostContent | TwitterThreadContent | GitHubRepoContent | ImageContent

_BY_FORMAT: dict[str, type[BaseModel]] = {
    "blog_post": BlogPostContent,
    "twitter_thread": TwitterThreadContent,
    "github_repo": GitHubRepoContent,
    "image": ImageContent,
}


def parse_content(format: str, content: dict[str, object]) -> OutputContent:
    """Read `outputs.content` back as its typed model."""
    model = _BY_FORMAT[format]
    return model.model_validate(content)  # type: ignore[return-value]
