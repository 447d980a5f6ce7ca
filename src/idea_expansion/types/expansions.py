"""The run lifecycle's parameters and results: what `client.expansions` sends to the database's run
functions and what they return. Unknown fields are errors, on both sides: these models forbid them and
the functions take named, typed arguments."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .content import OutputContent
from .enums import ExecutionStatus, OutputFormat, Stage
from .rows import BlogPost, Execution, Idea, ModelCall, Output

__all__ = [
    "DeliveryStep",
    "Evaluation",
    "ExpansionOutcome",
    "ExpansionResult",
    "ExpansionStart",
    "ExpansionStarted",
    "ExpansionStatus",
    "FinishStatus",
    "RunningStage",
]

FinishStatus = Literal["completed", "partial", "failed"]
"""How a running run ends."""
RunningStage = Literal["select", "judge", "choose_format", "generate", "image", "persist"]
"""The stages a running run reports (its heartbeat)."""
DeliveryStep = Literal["image", "publish"]
"""The side effects that happen after the credit is captured."""
STALE_AFTER = timedelta(minutes=15)


class _Model(BaseModel):
    """Parameters and results alike: immutable, and unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ExpansionStart(_Model):
    """What a run is asked for; fixed when it starts."""

    user_id: UUID
    """Whose run (and whose credit)."""
    idea_id: UUID | None = None
    """The idea to expand; None lets the database pick the user's most promising pending idea."""
    format: OutputFormat | None = None
    """Force a format; None lets the pipeline choose."""
    idempotency_key: UUID | None = None
    """Starting again with the same key returns the same run instead of a second one."""
    enqueue: bool = False
    """Queue it for the workers instead of running it now."""
    public: bool = False
    """Make what the run publishes (a blog post, a GitHub repository) public; private by default."""


class Evaluation(_Model):
    """The judge's verdict on the run's idea."""

    # Checked again when nested in an outcome: an instance made with `model_construct` skipped the rules.
    model_config = ConfigDict(revalidate_instances="always")

    score: int = Field(ge=0, le=100)
    """0-100: how worth expanding the idea is."""
    reasoning: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    """Why."""


class ExpansionOutcome(_Model):
    """How a running run ends: everything `finish` records, in one transaction."""

    status: FinishStatus
    """completed and partial capture the held credit and store the output; failed releases it."""
    tokens_used: int = Field(default=0, ge=0)
    """Tokens summed over every model call (with `model_calls`, their sum: 0 takes it from them)."""
    model_calls: list[ModelCall] = Field(default_factory=list, max_length=64)
    """Every model call of the run; the database sums them and derives the run's generation."""
    cost_usd: Decimal | None = Field(default=None, ge=0, lt=1_000_000, max_digits=12, decimal_places=6)
    """What the calls cost by the price table; None without one or when a call's model is unpriced."""
    review_score: int | None = Field(default=None, ge=0, le=100)
    """The last review's score (None: no review step)."""
    evaluation: Evaluation | None = None
    """The judge's verdict, kept on failed runs too."""
    format_chosen: OutputFormat | None = None
    """The format the run produced (or was producing when it failed)."""
    format_reasoning: str | None = None
    """Why that format."""
    content: OutputContent | None = None
    """The output (completed and partial runs only); its `format` is the chosen format."""
    error_step: Stage | None = None
    """The stage that failed (partial and failed runs)."""
    error_message: Annotated[str, StringConstraints(max_length=2000)] | None = None
    """What failed (partial and failed runs)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        erred = self.error_step is not None and self.error_message is not None
        if self.status == "completed" and (self.error_step is not None or self.error_message is not None):
            raise ValueError("a completed run has no error_step or error_message")
        if self.status != "completed" and not erred:
            raise ValueError(f"a {self.status} run needs error_step and error_message")
        if self.status == "failed" and self.content is not None:
            raise ValueError("a failed run stores no content")
        if self.model_calls:
            total = sum(call.tokens for call in self.model_calls)
            if self.tokens_used not in (0, total):
                raise ValueError(f"tokens_used ({self.tokens_used}) must be the sum of the model calls' ({total})")
            if self.status == "completed" and any(call.fallback for call in self.model_calls):
                raise ValueError("a run in which a model call fell back to the offline templates is partial")
        if self.status != "failed":
            if self.content is None:
                raise ValueError(f"a {self.status} run needs its content")
            if self.format_chosen is not None and self.content.format != self.format_chosen:
                raise ValueError(f"content is {self.content.format} but the chosen format is {self.format_chosen}")
        return self

    def arguments(self) -> dict[str, Any]:
        """The named arguments of `finish_expansion` (the content as its JSON object)."""
        chosen = self.format_chosen or (OutputFormat(self.content.format) if self.content is not None else None)
        return {
            "p_status": self.status,
            "p_tokens_used": self.tokens_used,
            "p_judge_score": None if self.evaluation is None else self.evaluation.score,
            "p_judge_reasoning": None if self.evaluation is None else self.evaluation.reasoning,
            "p_format_chosen": None if chosen is None else chosen.value,
            "p_format_reasoning": self.format_reasoning,
            "p_content": None if self.content is None else self.content.model_dump(mode="json"),
            "p_error_step": None if self.error_step is None else self.error_step.value,
            "p_error_message": self.error_message,
            "p_model_calls": [call.model_dump(mode="json", exclude_none=True) for call in self.model_calls],
            "p_cost_usd": self.cost_usd,
            "p_review_score": self.review_score,
        }

    @property
    def fell_back(self) -> bool:
        """Whether any model call fell back to the offline templates (the run is then never charged)."""
        return any(call.fallback for call in self.model_calls)


class ExpansionStarted(_Model):
    """A run that `start` or `claim` handed over: the execution and its fixed idea."""

    created: bool
    """False when an idempotency key found an existing run: report it, never run it again."""
    execution: Execution
    """The run."""
    idea: Idea | None
    """The idea it expands (None only for an existing run whose idea was since deleted)."""


class ExpansionResult(_Model):
    """A run after `finish` (or a delivery): the execution and what it produced."""

    execution: Execution
    """The run, as finished."""
    output: Output | None = None
    """Its output (completed and partial runs)."""
    blog_post: BlogPost | None = None
    """The blog post a blog_post run made (private unless the run asked for public)."""

    @property
    def status(self) -> ExecutionStatus:
        """completed, partial or failed (queued or running when reporting a run still in flight)."""
        return self.execution.status

    @property
    def outputs(self) -> list[Output]:
        """The output as a list (empty for failed runs)."""
        return [] if self.output is None else [self.output]

    def content(self) -> OutputContent | None:
        """The output's content, typed by its format (the same as `output.content`)."""
        return None if self.output is None else self.output.content


class ExpansionStatus(_Model):
    """Where a run is, in one call (a user client sees only its own runs)."""

    execution: Execution
    """The run."""
    output_ids: list[UUID]
    """Its outputs (one once it completed or went partial)."""

    @property
    def execution_id(self) -> UUID:
        return self.execution.id

    @property
    def status(self) -> ExecutionStatus:
        return self.execution.status

    @property
    def current_stage(self) -> Stage | None:
        return self.execution.current_stage

    @property
    def error_step(self) -> str | None:
        return self.execution.error_step

    @property
    def error_message(self) -> str | None:
        return self.execution.error_message
