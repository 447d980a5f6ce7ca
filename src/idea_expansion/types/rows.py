"""One pydantic model per table row. Field names, types and nullability mirror the migrations; a test
compares them with information_schema.columns of a freshly reset database."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from .content import OutputContent
from .enums import (
    ChargeStatus,
    CreditType,
    ExecutionStatus,
    IdeaStatus,
    OutputFormat,
    PaymentStatus,
    Provider,
    Stage,
    ValidationStatus,
)

__all__ = [
    "BlogPost",
    "Credential",
    "CreditCharge",
    "Execution",
    "Generation",
    "Idea",
    "ModelCall",
    "Output",
    "PaymentReceipt",
    "Usage",
    "User",
]


class Row(BaseModel):
    """Base of every row model: immutable, and strict about unknown columns."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class User(Row):
    """A `public.users` row."""

    id: UUID
    """Primary key; equals `auth.users.id` for Supabase Auth users."""
    email: str
    """Lower-case e-mail address, unique."""
    name: str | None
    """Display name."""
    timezone: str
    """IANA time zone name."""
    created_at: AwareDatetime
    """When the user was created."""
    updated_at: AwareDatetime
    """When the row last changed."""


class Idea(Row):
    """A `public.ideas` row."""

    id: UUID
    """Primary key."""
    user_id: UUID
    """Owner."""
    title: str
    """1-200 characters."""
    description: str | None
    """Up to 10,000 characters."""
    bullets: list[Any]
    """Bullet points (JSON array, at most 50)."""
    external_links: list[Any]
    """Links (JSON array, at most 20)."""
    status: IdeaStatus
    """pending, expanded or archived."""
    priority_score: int
    """Judge score 0-100."""
    last_evaluated_at: AwareDatetime | None
    """When the judge last scored it."""
    times_evaluated: int
    """How many times the judge scored it."""
    created_at: AwareDatetime
    """When it was created."""
    updated_at: AwareDatetime
    """When it last changed."""


class Credential(Row):
    """Metadata of a `public.credentials` row. The ciphertext is never part of the model."""

    id: UUID
    """Primary key."""
    user_id: UUID
    """Owner."""
    provider: Provider
    """Which service the secret is for."""
    is_active: bool
    """Inactive credentials are never decrypted."""
    validation_status: ValidationStatus
    """valid, invalid or not_checked."""
    created_at: AwareDatetime
    """When it was first stored."""
    updated_at: AwareDatetime
    """When it last changed."""


class Generation(StrEnum):
    """How a finished run was generated (`executions.generation`)."""

    MODEL = "model"
    """A model answered its calls."""
    OFFLINE = "offline"
    """The offline templates were configured; no model was tried."""
    FALLBACK = "fallback"
    """A model was tried and failed, and the offline templates answered: the run is never charged."""


class ModelCall(BaseModel):
    """One model call of a run, as `executions.model_calls` records it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    stage: str = Field(min_length=1, max_length=32)
    """The run stage it was made in (judge, choose_format, generate, image)."""
    task: Literal["judge", "choose_format", "plan", "blog_post", "twitter_thread", "github_repo", "image", "review"]
    """What was asked."""
    provider: str = Field(min_length=1, max_length=64)
    """Who answered: openai, anthropic or offline."""
    model: str = Field(min_length=1, max_length=200)
    """The model that answered, as its API named it (offline: offline-templates, or title-card for the card)."""
    input_tokens: int = Field(default=0, ge=0, le=999_999_999)
    """Input tokens the provider reported."""
    output_tokens: int = Field(default=0, ge=0, le=999_999_999)
    """Output tokens the provider reported."""
    fallback: bool = False
    """True when the offline templates wrote the run's content (a draft, in the generate stage) after the
    configured providers failed: the run is then never charged. A judge, format choice, plan or review answered
    offline is not a fallback; its `fallback_errors` say why the models failed."""
    fallback_errors: list[Annotated[str, StringConstraints(max_length=500)]] | None = Field(default=None, max_length=8)
    """Why the providers tried first failed ("<provider>: <error>"): kept on any call they preceded (one a
    later model answered too), not only one that fell back."""
    failed: bool = False
    """True for a call that gave no answer (a length cut, invalid JSON, a connection error): it counts in the
    sums and the cost (it may have spent tokens), never as an answer."""
    error: str | None = Field(default=None, max_length=500)
    """Why a failed call failed."""
    usage_reported: bool = True
    """False when the server reported no usage: its token counts are then unknown (0), and so is the cost."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Execution(Row):
    """A `public.executions` row: the audit trail of one pipeline run."""

    id: UUID
    """Primary key; also the idempotency key of the run's credit charge."""
    user_id: UUID
    """Who the run was for."""
    selected_idea_id: UUID | None
    """The idea the run expands, fixed when it starts (null once the idea is deleted after the run)."""
    judge_reasoning: str | None
    """Why the judge scored the idea as it did."""
    judge_score: int | None
    """0-100."""
    format_chosen: OutputFormat | None
    """The chosen output format."""
    format_reasoning: str | None
    """Why that format."""
    status: ExecutionStatus
    """queued, running, completed, partial or failed."""
    error_message: str | None
    """What went wrong, for failed and partial runs."""
    error_step: str | None
    """The stage that failed (a `Stage` value when the pipeline wrote it)."""
    tokens_used: int
    """Tokens summed over every model call."""
    duration_seconds: int | None
    """Whole seconds from start to finish."""
    started_at: AwareDatetime
    """When the run started."""
    completed_at: AwareDatetime | None
    """When the run finished (null while queued or running)."""
    idempotency_key: UUID | None
    """The caller's key: expanding again with it returns this run."""
    requested_format: OutputFormat | None
    """The format the caller forced, if any."""
    current_stage: Stage | None
    """The stage the run is in (done once finished)."""
    worker_id: str | None
    """The worker that claimed a queued run."""
    heartbeat_at: AwareDatetime | None
    """Last sign of life; running runs without one for too long are reaped."""
    make_public: bool
    """Whether what the run publishes (a blog post, a GitHub repository) is public; private unless the
    caller asked (fixed at start)."""
    input_tokens: int = 0
    """Input (prompt) tokens summed over the run's model calls."""
    output_tokens: int = 0
    """Output (completion) tokens summed over the run's model calls."""
    cost_usd: Decimal | None = None
    """What the calls cost by the operator's price table; None without one, or for a model it does not price."""
    model_calls: list[ModelCall] = Field(default_factory=list)
    """Every model call of the run, in order: stage, task, who answered, tokens, and whether it fell back."""
    generation: Generation | None = None
    """model, offline (configured offline: no model tried) or fallback (a model failed and the offline
    templates answered: never charged); None while queued or running."""
    review_score: int | None = None
    """The last review's score, 0-100; None when the run had no review step."""
    charged: bool = False
    """True once the run's credit was captured (never for a fallback run)."""


class Output(Row):
    """A `public.outputs` row: generated content."""

    id: UUID
    """Primary key."""
    execution_id: UUID
    """The run that produced it."""
    user_id: UUID
    """Owner."""
    idea_id: UUID | None
    """The idea it came from (null once the idea is deleted)."""
    format: OutputFormat
    """blog_post, twitter_thread, github_repo or image."""
    content: OutputContent
    """The content, as its format's model (`BlogPostContent`, `TwitterThreadContent`, `GitHubRepoContent`
    or `ImageContent`)."""
    published: bool
    """True once published somewhere (then publication_url is set)."""
    publication_url: str | None
    """Where it was published."""
    publication_metadata: dict[str, Any]
    """Publisher details (JSON object)."""
    created_at: AwareDatetime
    """When it was generated."""
    published_at: AwareDatetime | None
    """When it was published."""

    @model_validator(mode="before")
    @classmethod
    def _content_of_the_rows_format(cls, data: Any) -> Any:
        # The row's `format` column is what the content is. The run functions store the content with its
        # own `format` (finish_expansion refuses one that differs from the row's), but a row written another
        # way (by hand, by the service role) may leave it out: it then reads as the row's format.
        if isinstance(data, dict):
            content, row_format = data.get("content"), data.get("format")
            if isinstance(content, dict) and "format" not in content and isinstance(row_format, str):
                return {**data, "content": {"format": str(row_format), **content}}
        return data

    @model_validator(mode="after")
    def _content_matches_the_format(self) -> Self:
        if self.content.format != self.format:
            raise ValueError(f"the content is {self.content.format} but the output's format is {self.format}")
        return self


class BlogPost(Row):
    """A `public.blog_posts` row."""

    id: UUID
    """Primary key."""
    output_id: UUID | None
    """The output it renders (1:1)."""
    user_id: UUID
    """Owner."""
    title: str
    """Post title."""
    slug: str
    """URL slug, unique per user."""
    markdown_content: str
    """The post in Markdown."""
    html_content: str
    """The post rendered to HTML."""
    meta_description: str | None
    """At most 160 characters."""
    tags: list[str]
    """At most 20 tags."""
    is_public: bool
    """Public posts are readable by anyone."""
    published_at: AwareDatetime | None
    """When it was published."""
    created_at: AwareDatetime
    """When it was created."""
    updated_at: AwareDatetime
    """When it last changed."""


class Usage(Row):
    """A `public.usage_tracking` row: a user's credits and lifetime counters."""

    id: UUID
    """Primary key."""
    user_id: UUID
    """Owner."""
    free_expansions_remaining: int
    """Free expansions left."""
    paid_credits_remaining: int
    """Paid credits left."""
    total_expansions_used: int
    """Lifetime expansions charged."""
    total_free_used: int
    """Lifetime free expansions used."""
    total_paid_used: int
    """Lifetime paid credits used."""
    created_at: AwareDatetime
    """When the row was created."""
    updated_at: AwareDatetime
    """When it last changed."""

    @property
    def total_remaining(self) -> int:
        """Free plus paid credits left."""
        return self.free_expansions_remaining + self.paid_credits_remaining


class PaymentReceipt(Row):
    """A `public.payment_receipts` row."""

    id: UUID
    """Primary key."""
    user_id: UUID
    """Who paid."""
    amount_usd: Decimal = Field(max_digits=10, decimal_places=2)
    """Amount paid in USD (numeric(10,2)). PostgREST sends it as a JSON number; it is read back at cents."""
    credits_purchased: int
    """Credits granted."""
    bmc_reference: str | None
    """Buy Me a Coffee reference; a reference is granted once."""
    notes: str | None
    """Admin notes."""
    verified_by: str | None
    """Who verified the payment."""
    status: PaymentStatus
    """pending, verified or refunded."""
    created_at: AwareDatetime
    """When it was recorded."""
    verified_at: AwareDatetime | None
    """When it was verified."""

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _to_cents(cls, value: object) -> object:
        # A JSON number like 5.00 arrives as the float 5.0: go through its text and keep two places.
        if isinstance(value, float | int | str):
            return Decimal(str(value)).quantize(Decimal("0.01"))
        return value


class CreditCharge(Row):
    """A `public.credit_charges` row: one consumed credit."""

    id: UUID
    """Primary key."""
    user_id: UUID
    """Whose credit."""
    idempotency_key: UUID | None
    """The execution id that made the charge, if any."""
    credit_type: CreditType
    """free or paid."""
    created_at: AwareDatetime
    """When it was charged (or held)."""
    status: ChargeStatus
    """held while the run is in flight, then captured, or released when the run failed."""
