"""The provider protocol: a pydantic model in, a validated instance and its token usage out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

from ..._exceptions import ConfigurationError, ProviderError
from ...types.params import (
    MAX_BULLET_CHARS,
    MAX_BULLETS,
    MAX_DESCRIPTION_CHARS,
    MAX_LINK_CHARS,
    MAX_LINKS,
    MAX_TITLE_CHARS,
)

__all__ = [
    "MAX_IDEA_PROMPT_CHARS",
    "PROMPT_BULLETS",
    "PROMPT_BULLET_CHARS",
    "PROMPT_DESCRIPTION_CHARS",
    "PROMPT_LINKS",
    "PROMPT_LINK_CHARS",
    "PROMPT_TITLE_CHARS",
    "Completion",
    "FallbackProvider",
    "IdeaBrief",
    "Provider",
    "ProviderError",
    "Task",
]

# What of an idea goes into a prompt: every model call of a run sends at most this much of it, so the
# characters one credit buys are bounded (README, "The database": the worst case per credit).
PROMPT_TITLE_CHARS = 200
PROMPT_DESCRIPTION_CHARS = 4_000
PROMPT_BULLETS = 20
PROMPT_BULLET_CHARS = 200
PROMPT_LINKS = 10
PROMPT_LINK_CHARS = 300

T = TypeVar("T", bound=BaseModel)
Task = Literal["judge", "choose_format", "blog_post", "twitter_thread", "github_repo", "image"]


@dataclass(frozen=True)
class IdeaBrief:
    """What every provider gets to work from: the idea as the user wrote it."""

    title: str
    description: str | None
    bullets: tuple[str, ...]
    external_links: tuple[str, ...]

    def as_prompt(self) -> str:
        """The idea as a model reads it, bounded: the title, the start of the description, the first
        bullets and links (each on one line and cut to length), and how many were left out. Never longer
        than `MAX_IDEA_PROMPT_CHARS`, whatever the brief holds."""
        return self._prompt()[:MAX_IDEA_PROMPT_CHARS]

    def _prompt(self) -> str:
        lines = [f"Title: {_clip(_one_line(self.title), PROMPT_TITLE_CHARS)}"]
        if self.description and self.description.strip():
            lines.append(f"Description: {_clip(self.description.strip(), PROMPT_DESCRIPTION_CHARS)}")
        lines.extend(f"- {_clip(_one_line(bullet), PROMPT_BULLET_CHARS)}" for bullet in self.bullets[:PROMPT_BULLETS])
        lines.extend(
            f"Link: {_clip(_one_line(link), PROMPT_LINK_CHARS)}" for link in self.external_links[:PROMPT_LINKS]
        )
        left_out = [
            f"{count} more {noun}"
            for count, noun in (
                (len(self.bullets) - PROMPT_BULLETS, "bullet points"),
                (len(self.external_links) - PROMPT_LINKS, "links"),
            )
            if count > 0
        ]
        if left_out:
            lines.append(f"({' and '.join(left_out)} not shown)")
        return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_IDEA_PROMPT_CHARS = len(
    IdeaBrief(
        title="x" * MAX_TITLE_CHARS,
        description="x" * MAX_DESCRIPTION_CHARS,
        bullets=("x" * MAX_BULLET_CHARS,) * MAX_BULLETS,
        external_links=("x" * MAX_LINK_CHARS,) * MAX_LINKS,
    )._prompt()
)
"""The most characters of an idea any one prompt carries: an idea at every database limit."""


@dataclass(frozen=True)
class Completion(Generic[T]):
    """A provider's answer: the validated value and what it cost."""

    value: T
    input_tokens: int
    output_tokens: int
    model: str

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Provider(Protocol):
    """Produces structured output for a task. Implementations validate with the given schema."""

    name: str

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]: ...


class FallbackProvider:
    """Tries providers in order; the first that succeeds answers. Raises when all fail, naming each."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ConfigurationError("FallbackProvider needs at least one provider")
        self.providers = list(providers)
        self.name = " -> ".join(p.name for p in self.providers)

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        failures: list[str] = []
        for provider in self.providers:
            try:
                return provider.generate(task, schema, idea=idea, instructions=instructions)
            except ProviderError as exc:
                failures.append(f"{provider.name}: {exc}")
        raise ProviderError("every provider failed. " + " | ".join(failures))
