"""What runs store in `outputs.content`: one model per format, a discriminated union on `format`.

`Output.content` is an `OutputContent`: pydantic reads the content's `format` and validates it as that
format's model, so `isinstance(output.content, BlogPostContent)` narrows it. Like the row models, the
content models are immutable and refuse unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "BlogPostContent",
    "BlogSection",
    "GitHubRepoContent",
    "ImageContent",
    "OutputContent",
    "RepoFile",
    "StoredImage",
    "TwitterThreadContent",
]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""Non-blank text, surrounding blanks removed."""


class Model(BaseModel):
    """Base of the content models (and the pipeline's drafts): unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ContentModel(Model):
    """Base of what an output stores: also immutable, as the `Output` row that holds it is."""

    model_config = ConfigDict(frozen=True)


class BlogSection(ContentModel):
    """One section of a blog post."""

    heading: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    """Section heading."""
    paragraphs: list[Text] = Field(min_length=1, max_length=12)
    """Paragraphs (Markdown inline syntax allowed)."""


class RepoFile(ContentModel):
    """One file of a generated repository."""

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


# -- stored content: outputs.content -------------------------------------------------------------------
class StoredImage(ContentModel):
    """A PNG in the images bucket."""

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


class BlogPostContent(ContentModel):
    """A blog post (a `blog_posts` row is made from it when the run finishes)."""

    format: Literal["blog_post"] = "blog_post"
    """The discriminator: always blog_post."""
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


class TwitterThreadContent(ContentModel):
    """A thread of numbered posts."""

    format: Literal["twitter_thread"] = "twitter_thread"
    """The discriminator: always twitter_thread."""
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


class GitHubRepoContent(ContentModel):
    """A small code repository (pushed to GitHub after the capture, when the user has a token)."""

    format: Literal["github_repo"] = "github_repo"
    """The discriminator: always github_repo."""
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


class ImageContent(ContentModel):
    """An image with its caption."""

    format: Literal["image"] = "image"
    """The discriminator: always image."""
    prompt: str
    """What the image shows."""
    caption: str
    """Caption."""
    headline: str | None = None
    """Words on the title card (lets a failed upload be re-rendered and delivered again)."""
    image: StoredImage
    """Where the PNG is stored (never a data URL)."""
    generated_by: str
    """Which provider made it."""


OutputContent = Annotated[
    BlogPostContent | TwitterThreadContent | GitHubRepoContent | ImageContent, Field(discriminator="format")
]
"""Any output's content; `format` says which model it is."""
