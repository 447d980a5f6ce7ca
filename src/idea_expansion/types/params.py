"""Validated inputs for create/update calls. They mirror the database's CHECK constraints so bad
input fails before a round trip, with the same rule in the message; the database stays the authority."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .._exceptions import InvalidRequestError

__all__ = [
    "MAX_BALANCE",
    "MAX_BULLETS",
    "MAX_BULLET_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_GRANT",
    "MAX_IMAGES_PER_USER",
    "MAX_LINKS",
    "MAX_LINK_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_TITLE_CHARS",
    "GitHubSignIn",
    "IdeaCreate",
    "IdeaUpdate",
    "UserCreate",
    "UserUpdate",
    "email_key",
    "is_utf8",
    "parse_params",
]

# The database's limits (CHECK constraints, add_paid_credits, the images bucket's insert policy), mirrored
# so bad input fails before a round trip; tests/test_money_limits.py keeps both sides equal.
MAX_TITLE_CHARS = 200
"""ideas_title_length."""
MAX_DESCRIPTION_CHARS = 10_000
"""ideas_description_length."""
MAX_BULLETS = 50
"""ideas_bullets_check."""
MAX_BULLET_CHARS = 1_000
"""ideas_bullets_items_check: each bullet is a non-blank string of at most this many characters."""
MAX_LINKS = 20
"""ideas_external_links_check."""
MAX_LINK_CHARS = 2_000
"""ideas_external_links_items_check: each link is a non-blank string of at most this many characters."""
MAX_TAGS = 20
"""blog_posts_tags_check."""
MAX_TAG_CHARS = 50
"""blog_posts_tags_items_check: each tag is non-blank and at most this many characters."""
MAX_GRANT = 100_000
"""add_paid_credits: the most credits one payment grants (payment_receipts_credits_purchased_max)."""
MAX_BALANCE = 1_000_000
"""usage_tracking_balance_max: the most free, and the most paid, credits a balance holds."""
MAX_IMAGES_PER_USER = 1_000
"""The images bucket's insert policy: objects a user may keep in their folder."""


def _timezone(value: str) -> str:
    # At most 64 characters, as users_timezone_length: a longer name is refused before it becomes a file
    # path, which the tzdata package opens as a resource (OSError "File name too long", not a ValueError).
    if len(value) > 64:
        raise ValueError("a time zone name has at most 64 characters (use an IANA name such as 'Europe/Paris')")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/Paris')") from exc
    return value


def _email(value: str) -> str:
    # ASCII only, as the database's users_email_ascii: lower-casing folds some other letters onto ASCII
    # ones (the Kelvin sign U+212A onto k), so a look-alike would reach another person's profile.
    if not value.isascii():
        raise ValueError(f"e-mail addresses must be ASCII (an internationalised domain in its xn-- form): {value!r}")
    local, at, domain = value.partition("@")
    if not (at and local and domain) or "@" in domain or any(ch.isspace() for ch in value):
        raise ValueError(f"not an e-mail address: {value!r}")
    return value.lower()


def is_utf8(text: str) -> bool:
    """Whether `text` can be sent anywhere (the database, a file name, a URL, the encryptor): a Python
    string may hold a lone surrogate, which no UTF-8 encoder takes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def email_key(value: str) -> str | None:
    """An address as stored, for a lookup: trimmed and lower-cased; None when no stored address can match
    (not ASCII: lower-casing would fold a look-alike such as the Kelvin sign onto someone else's)."""
    value = value.strip()
    return value.lower() if value.isascii() else None


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE_CHARS)]
Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320), AfterValidator(_email)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Bullet = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BULLET_CHARS)]
Link = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LINK_CHARS)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class IdeaCreate(Params):
    """A new idea."""

    title: Title
    """1-200 characters (surrounding blanks removed)."""
    description: Description | None = None
    """Up to 10,000 characters."""
    bullets: list[Bullet] = Field(default_factory=list, max_length=MAX_BULLETS)
    """Up to 50 bullet points, each 1-1,000 characters."""
    external_links: list[Link] = Field(default_factory=list, max_length=MAX_LINKS)
    """Up to 20 links, each 1-2,000 characters."""


class IdeaUpdate(Params):
    """Changes to an idea; fields left None stay as they are."""

    title: Title | None = None
    """1-200 characters."""
    description: Description | None = None
    """Up to 10,000 characters."""
    bullets: list[Bullet] | None = Field(default=None, max_length=MAX_BULLETS)
    """Replaces all bullet points (up to 50, each 1-1,000 characters)."""
    external_links: list[Link] | None = Field(default=None, max_length=MAX_LINKS)
    """Replaces all links (up to 20, each 1-2,000 characters)."""


class UserUpdate(Params):
    """Changes to a profile; fields left None stay as they are."""

    name: Name | None = None
    """Display name, up to 200 characters."""
    timezone: TimeZone | None = None
    """IANA time zone name."""


class UserCreate(Params):
    """A new user."""

    email: Email
    """E-mail address (stored lower-case)."""
    name: Name | None = None
    """Display name."""
    timezone: TimeZone = "UTC"
    """IANA time zone name."""


class GitHubSignIn(Params):
    """What a GitHub OAuth sign-in tells us about the user."""

    email: Email
    """The GitHub e-mail address (stored lower-case)."""
    name: Name | None = None
    """The GitHub display name."""
    login: Name
    """The GitHub login (used as the name when there is none)."""
    access_token: Annotated[str, StringConstraints(min_length=1)]
    """The OAuth access token; stored encrypted, never in clear."""
    timezone: TimeZone = "UTC"
    """IANA time zone name."""


P = TypeVar("P", bound=BaseModel)


def parse_params(model: type[P], **values: Any) -> P:
    """Validate input, turning pydantic's error into `InvalidRequestError` (without echoing secrets)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidRequestError(f"invalid {model.__name__}: {problems}") from None
