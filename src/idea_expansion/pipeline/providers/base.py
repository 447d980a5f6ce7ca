"""The provider protocol: a pydantic model in, a validated instance and its token usage out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

from ..._exceptions import IdeaExpansionError

__all__ = ["Completion", "FallbackProvider", "IdeaBrief", "Provider", "ProviderError", "Task"]

T = TypeVar("T", bound=BaseModel)
Task = Literal["judge", "choose_format", "blog_post", "twitter_thread", "github_repo", "image"]


class ProviderError(IdeaExpansionError):
    """A model provider failed (after its own retries) or returned output that does not fit the schema."""


@dataclass(frozen=True)
class IdeaBrief:
    """What every provider gets to work from: the idea as the user wrote it."""

    title: str
    description: str | None
    bullets: tuple[str, ...]
    external_links: tuple[str, ...]

    def as_prompt(self) -> str:
        lines = [f"Title: {self.title}"]
        if self.description:
            lines.append(f"Description: {self.description}")
        lines.extend(f"- {bullet}" for bullet in self.bullets)
        lines.extend(f"Link: {link}" for link in self.external_links)
        return "\n".join(lines)


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
            raise ValueError("FallbackProvider needs at least one provider")
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
