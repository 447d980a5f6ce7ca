"""Turning drafts into stored content: Markdown and HTML, slugs, counts, numbering, repository names,
and the PNG title card."""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
import textwrap
import unicodedata
from typing import TYPE_CHECKING

from ..types import BlogPostContent, GitHubRepoContent, TwitterThreadContent
from .content import BlogDraft, RepoDraft, ThreadDraft

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from PIL import Image

__all__ = [
    "PNG_COMPRESS_LEVEL",
    "build_blog_post",
    "build_repo",
    "build_thread",
    "draw_title_card",
    "encode_png",
    "render_title_card",
    "sanitize_repo_name",
    "slugify",
]


# CommonMark with raw HTML disabled: any HTML in a draft is escaped, never passed through.
@functools.cache
def _markdown() -> MarkdownIt:
    """The Markdown renderer (raw HTML off), made on first use: importing the pipeline stays cheap."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False})


def load_renderers() -> None:
    """Load what rendering a post or a title card needs (markdown-it, Pillow and its image plugins) now
    rather than on first use: for a process that forks workers."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: F401 - loaded for the forks, not used here

    Image.preinit()  # the image plugins Pillow otherwise imports on the first save
    _markdown()


_WORD = re.compile(r"[\w\u2019'-]+", re.UNICODE)


def slugify(text: str, *, max_length: int = 80) -> str:
    """Lower-case ASCII words joined by hyphens (matches the blog_posts slug CHECK)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > max_length:
            break
        slug = candidate
    return slug or "post"


def build_blog_post(draft: BlogDraft, *, generated_by: str) -> BlogPostContent:
    parts = [f"# {draft.title}"]
    for section in draft.sections:
        parts.append(f"## {section.heading}")
        parts.extend(section.paragraphs)
    markdown = "\n\n".join(parts) + "\n"
    body_words = sum(len(_WORD.findall(p)) for s in draft.sections for p in [s.heading, *s.paragraphs])
    return BlogPostContent(
        title=draft.title,
        slug=slugify(draft.title),
        sections=draft.sections,
        markdown=markdown,
        html=_markdown().render(markdown),
        meta_description=draft.meta_description,
        tags=list(dict.fromkeys(t.lower() for t in draft.tags)),
        word_count=body_words,
        reading_time_minutes=max(1, math.ceil(body_words / 200)),
        social_post=draft.social_post,
        generated_by=generated_by,
    )


def build_thread(draft: ThreadDraft, *, generated_by: str) -> TwitterThreadContent:
    total = len(draft.posts)
    return TwitterThreadContent(
        posts=[f"{n}/{total} {post}" for n, post in enumerate(draft.posts, 1)], generated_by=generated_by
    )


def sanitize_repo_name(name: str) -> str:
    """A GitHub-safe repository name: lower-case ASCII letters, digits and single hyphens, at most 60."""
    slug = slugify(name, max_length=60)
    return slug if len(slug) >= 3 else f"idea-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def build_repo(draft: RepoDraft, *, generated_by: str) -> GitHubRepoContent:
    paths = [f.path for f in draft.files]
    if len(set(paths)) != len(paths):
        raise ValueError("the repository has two files with the same path")
    if not any(p.lower() == "readme.md" for p in paths):
        raise ValueError("the repository needs a README.md")
    return GitHubRepoContent(
        repo_name=sanitize_repo_name(draft.repo_name),
        description=draft.description,
        files=draft.files,
        topics=list(dict.fromkeys(["ai-generated", *draft.topics]))[:20],
        run_instructions=draft.run_instructions,
        generated_by=generated_by,
    )


# zlib level 3 instead of `optimize=True` (level 9): measured on the pipeline's 1200x630 title cards
# (about 400 colours, so no lossless palette), encoding takes 9.6 ms instead of 43 ms of CPU per image
# and the file grows from 27.9 kB to 37.4 kB on average (+34%, far below the bucket's size limit).
# The cards were three quarters of an offline run's CPU; levels 1-3 cost the same here and 3 is smallest.
PNG_COMPRESS_LEVEL = 3


def draw_title_card(headline: str, caption: str, *, width: int = 1200, height: int = 630) -> Image.Image:
    """The title card's pixels: a colour band chosen from the headline, the headline and the caption."""
    from PIL import Image, ImageDraw, ImageFont

    digest = hashlib.sha256(headline.encode()).digest()
    background = (20 + digest[0] % 60, 30 + digest[1] % 60, 60 + digest[2] % 80)
    accent = (200 + digest[3] % 56, 140 + digest[4] % 100, 60 + digest[5] % 120)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, height - 24, width, height], fill=accent)
    title_font = ImageFont.load_default(size=64)
    caption_font = ImageFont.load_default(size=30)
    y = 80
    for line in textwrap.wrap(headline, width=30)[:4]:
        draw.text((80, y), line, font=title_font, fill=(255, 255, 255))
        y += 78
    y += 20
    for line in textwrap.wrap(caption, width=70)[:4]:
        draw.text((80, y), line, font=caption_font, fill=(225, 225, 235))
        y += 40
    return image


def encode_png(image: Image.Image) -> bytes:
    """A lossless PNG of `image`, compressed at `PNG_COMPRESS_LEVEL`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def render_title_card(headline: str, caption: str, *, width: int = 1200, height: int = 630) -> bytes:
    """A real PNG: a colour band chosen from the headline, the headline and the caption in large type."""
    return encode_png(draw_title_card(headline, caption, width=width, height=height))
