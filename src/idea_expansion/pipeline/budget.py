"""The most tokens one credit can spend: every call of the longest run, each at its prompt ceiling and its
output cap. README.md ("What a run costs") states the figure; a test keeps the two equal.

The bound, per model call:
  input  <= UTF-8 bytes of (system prompt + task line + instructions at their ceiling + the idea at
            MAX_IDEA_PROMPT_CHARS + the task's JSON schema) + CALL_OVERHEAD_TOKENS
  output <= MAX_OUTPUT_TOKENS[task] (sent to the provider as its hard cap)
Byte-level BPE tokenizers (OpenAI's, Anthropic's) never make more tokens than a text has UTF-8 bytes, and a
character is at most 4 bytes, so text the user or a model wrote counts 4 tokens a character; our own fixed
text (system prompt, rubrics, schemas) is ASCII and counts its bytes. The run that can cost most plans,
drafts, is reviewed, revised once and reviewed again (a blog post also gets a model-rendered cover).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel

from ..types import OutputFormat
from .content import (
    BlogDraft,
    FormatDecision,
    ImageDraft,
    JudgeVerdict,
    PlanDraft,
    RepoDraft,
    ReviewVerdict,
    ThreadDraft,
)
from .prompts import INSTRUCTIONS, PLAN_INSTRUCTIONS, REVIEW_RUBRICS, instructions_ceiling
from .providers.base import MAX_IDEA_PROMPT_CHARS, MAX_OUTPUT_TOKENS, Task
from .providers.llm import SYSTEM

__all__ = [
    "CALL_OVERHEAD_TOKENS",
    "IMAGE_PROMPT_CHARS",
    "IMAGE_RENDER_TOKENS",
    "RUN_CALLS",
    "call_ceiling",
    "worst_case_tokens_by_format",
    "worst_case_tokens_per_credit",
]

CALL_OVERHEAD_TOKENS = 600
"""Per call: the chat template's message markers and the tool-use system prompt a provider adds (Anthropic
documents about 350 tokens for a forced tool)."""
IMAGE_PROMPT_CHARS = 2_000
"""The most of an image draft's prompt sent to an image model (the runner clips it)."""
IMAGE_RENDER_TOKENS = 6_240
"""An image model's output for one picture: gpt-image-1 at high quality, 1536x1024 (OpenAI's pricing table)."""
_USER_TEXT_BYTES = 4
"""UTF-8 bytes (so tokens, at most) of one character of text the user or a model wrote."""

_SCHEMAS: dict[Task, type[BaseModel]] = {
    "judge": JudgeVerdict,
    "choose_format": FormatDecision,
    "plan": PlanDraft,
    "blog_post": BlogDraft,
    "twitter_thread": ThreadDraft,
    "github_repo": RepoDraft,
    "image": ImageDraft,
    "review": ReviewVerdict,
}

RUN_CALLS: dict[OutputFormat, tuple[Task, ...]] = {
    OutputFormat.BLOG_POST: ("judge", "choose_format", "plan", "blog_post", "review", "blog_post", "review"),
    OutputFormat.GITHUB_REPO: ("judge", "choose_format", "plan", "github_repo", "review", "github_repo", "review"),
    OutputFormat.TWITTER_THREAD: ("judge", "choose_format", "twitter_thread"),
    OutputFormat.IMAGE: ("judge", "choose_format", "image"),
}
"""The model calls of the longest run of each format (a revision included), before any image rendering."""
_RENDERS: dict[OutputFormat, int] = {OutputFormat.BLOG_POST: 1, OutputFormat.IMAGE: 1}
"""Pictures a model may render in a run of each format (a blog post's cover, an image run's image)."""


@dataclass(frozen=True)
class CallCeiling:
    """The most one call can spend."""

    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _fixed_instruction_chars(task: Task) -> int:
    """The part of a task's instructions that is our own ASCII text (the rest was carried from earlier calls)."""
    if task == "plan":
        return max(len(text) for text in PLAN_INSTRUCTIONS.values())
    if task == "review":
        return max(len(text) for text in REVIEW_RUBRICS.values())
    return len(INSTRUCTIONS[task])


def call_ceiling(task: Task) -> CallCeiling:
    """The most input and output tokens one `task` call can spend."""
    fixed = _fixed_instruction_chars(task)
    carried = instructions_ceiling(task) - fixed
    schema = len(json.dumps(_SCHEMAS[task].model_json_schema()).encode())
    prompt = (
        len(SYSTEM.encode())
        + len(f"Task: {task}\n\n\nThe idea:\n".encode())
        + fixed
        + _USER_TEXT_BYTES * (carried + MAX_IDEA_PROMPT_CHARS)
        + schema
    )
    return CallCeiling(prompt + CALL_OVERHEAD_TOKENS, MAX_OUTPUT_TOKENS[task])


def _render_ceiling() -> int:
    return _USER_TEXT_BYTES * IMAGE_PROMPT_CHARS + CALL_OVERHEAD_TOKENS + IMAGE_RENDER_TOKENS


def worst_case_tokens_by_format() -> dict[OutputFormat, int]:
    """The most tokens a run of each format can spend (its longest path, every call at its ceiling)."""
    return {
        fmt: sum(call_ceiling(task).tokens for task in calls) + _RENDERS.get(fmt, 0) * _render_ceiling()
        for fmt, calls in RUN_CALLS.items()
    }


def worst_case_tokens_per_credit(model_providers: int = 1) -> int:
    """The most tokens one credit (one run) can spend, whatever the idea and whatever the models answer.

    Args:
        model_providers: The model providers in the chain (IDEA_EXPANSION_PROVIDER's models, not the
            offline templates). Every call may be tried on each in turn, each failing after spending up
            to the call's ceiling (an answer cut at the output cap, invalid JSON), so the figure is the
            one-provider figure times this. An SDK retry after a timeout may be billed again on top of it.
    """
    if isinstance(model_providers, bool) or not isinstance(model_providers, int) or model_providers < 1:
        raise ValueError(f"model_providers must be a whole number of at least 1, not {model_providers!r}")
    return model_providers * max(worst_case_tokens_by_format().values())
