"""Closed sets, mirroring the SQL `check (... in (...))` constraints value for value."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ChargeStatus",
    "CreditType",
    "ExecutionStatus",
    "IdeaStatus",
    "OutputFormat",
    "PaymentStatus",
    "Provider",
    "Stage",
    "ValidationStatus",
]


class IdeaStatus(StrEnum):
    """`ideas.status`: pending -> expanded | archived; expanded -> archived."""

    PENDING = "pending"
    EXPANDED = "expanded"
    ARCHIVED = "archived"


class Provider(StrEnum):
    """`credentials.provider`."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GITHUB = "github"
    TWITTER = "twitter"
    REPLICATE = "replicate"


class ValidationStatus(StrEnum):
    """`credentials.validation_status`."""

    VALID = "valid"
    INVALID = "invalid"
    NOT_CHECKED = "not_checked"


class OutputFormat(StrEnum):
    """`outputs.format` and `executions.format_chosen`."""

    BLOG_POST = "blog_post"
    TWITTER_THREAD = "twitter_thread"
    GITHUB_REPO = "github_repo"
    IMAGE = "image"


class ExecutionStatus(StrEnum):
    """`executions.status`: queued -> running -> completed | partial | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL = "partial"


class PaymentStatus(StrEnum):
    """`payment_receipts.status`."""

    PENDING = "pending"
    VERIFIED = "verified"
    REFUNDED = "refunded"


class ChargeStatus(StrEnum):
    """`credit_charges.status`: a run's credit is held, then captured or released."""

    HELD = "held"
    CAPTURED = "captured"
    RELEASED = "released"


class Stage(StrEnum):
    """`executions.current_stage` and `executions.error_step` values. `timeout` is a reaped run's error
    step; `cancelled` a queued run's whose idea was deleted or archived before a worker started it."""

    QUEUED = "queued"
    SELECT = "select"
    JUDGE = "judge"
    CHOOSE_FORMAT = "choose_format"
    GENERATE = "generate"
    IMAGE = "image"
    PUBLISH = "publish"
    PERSIST = "persist"
    DONE = "done"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class CreditType(StrEnum):
    """What `consume_expansion_credit` spent."""

    FREE = "free"
    PAID = "paid"
