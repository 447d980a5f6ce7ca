"""The provider protocol: a pydantic model in, a validated instance and its token usage out, with who
answered (provider and the model the API reported) and which providers failed before it, with the tokens
their failed calls may have spent (`FailedCall`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeAlias, TypeVar, get_args

from pydantic import BaseModel

from ..._exceptions import ConfigurationError, FailedCall, ProviderError
from ..._settings import ModelTask
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
    "MAX_OUTPUT_TOKENS",
    "PROMPT_BULLETS",
    "PROMPT_BULLET_CHARS",
    "PROMPT_DESCRIPTION_CHARS",
    "PROMPT_LINKS",
    "PROMPT_LINK_CHARS",
    "PROMPT_TITLE_CHARS",
    "TASKS",
    "Completion",
    "FailedCall",
    "FallbackProvider",
    "IdeaBrief",
    "Provider",
    "ProviderError",
    "RenderedImage",
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
Task: TypeAlias = ModelTask
"""A model call of a run: judge, choose_format, plan, blog_post, twitter_thread, github_repo, image, review.
(Defined once beside the settings, whose per-task model maps are keyed by it.)"""
TASKS: tuple[Task, ...] = get_args(ModelTask)

MAX_OUTPUT_TOKENS: dict[Task, int] = {
    "judge": 400,
    "choose_format": 300,
    "plan": 1_500,
    "blog_post": 4_000,
    "twitter_thread": 1_500,
    "github_repo": 16_000,
    "image": 600,
    "review": 800,
}
"""The most output tokens one call of each task may produce: OpenAI's `max_completion_tokens`, Anthropic's
`max_tokens`. With the bounded prompt (`MAX_IDEA_PROMPT_CHARS`) they bound what one credit can cost."""


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
    """A provider's answer: the validated value, what it cost, who gave it, and the calls that failed
    before it."""

    value: T
    input_tokens: int
    """Prompt tokens the API reported (0 when it reported no usage, as some local servers do)."""
    output_tokens: int
    """Completion tokens the API reported (0 when it reported no usage)."""
    model: str
    """The model the API says answered (`response.model`), not merely the one asked for."""
    provider: str = ""
    """Who answered: "openai" (also any OpenAI-compatible server), "anthropic" or "offline"; "" when the
    provider did not say (the runner then records the answering provider's `name`)."""
    fallback_errors: tuple[str, ...] = ()
    """"<provider name>: <error>" of each provider tried first that failed (set by `FallbackProvider`)."""
    failed_calls: tuple[FailedCall, ...] = ()
    """The model calls of the providers tried first that failed, with the tokens each may have spent (set
    by `FallbackProvider`; `fallback_errors` is their text)."""
    usage_reported: bool = True
    """The API reported the tokens; False when it sent no usage (the tokens are then 0, not known)."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def fell_back_to_offline(self) -> bool:
        """The offline templates answered because every model before them failed."""
        return self.provider == "offline" and bool(self.fallback_errors)


@dataclass(frozen=True)
class RenderedImage:
    """A PNG ready to store, with who made it: the offline title card or an image model."""

    data: bytes
    width: int
    height: int
    provider: str
    """"openai" for an image model, "offline" for the title card."""
    model: str
    """The image model (or "title-card")."""
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Provider(Protocol):
    """Produces structured output for a task. Implementations validate with the given schema."""

    name: str

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]: ...


class FallbackProvider:
    """Tries providers in order; the first that succeeds answers, its completion carrying the failures of
    those tried before it (`fallback_errors`, and their calls with the tokens they spent in `failed_calls`).
    Raises `ProviderError` when all fail, naming each and carrying every failed call."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ConfigurationError("FallbackProvider needs at least one provider")
        self.providers = list(providers)
        self.name = " -> ".join(p.name for p in self.providers)

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        failures: list[str] = []
        failed_calls: list[FailedCall] = []
        for provider in self.providers:
            try:
                completion = provider.generate(task, schema, idea=idea, instructions=instructions)
            except ProviderError as exc:
                failures.append(f"{provider.name}: {exc}")
                failed_calls.extend(getattr(exc, "failed_calls", ()))  # a subclass may skip our __init__
                continue
            if not completion.provider:  # the runner sees only the chain: name the one that answered
                completion = replace(completion, provider=provider.name)
            if not failures:
                return completion
            return replace(
                completion,
                fallback_errors=(*failures, *completion.fallback_errors),
                failed_calls=(*failed_calls, *completion.failed_calls),
            )
        raise ProviderError("every provider failed. " + " | ".join(failures), failed_calls=tuple(failed_calls))
