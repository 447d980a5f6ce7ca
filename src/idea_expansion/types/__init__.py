"""Typed rows, enums and parameters."""

from .content import (
    BlogPostContent,
    GitHubRepoContent,
    ImageContent,
    OutputContent,
    StoredImage,
    TwitterThreadContent,
)
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
from .expansions import (
    Evaluation,
    ExpansionOutcome,
    ExpansionResult,
    ExpansionStart,
    ExpansionStarted,
    ExpansionStatus,
)
from .ids import IdLike
from .params import GitHubSignIn, IdeaCreate, IdeaUpdate, UserCreate, UserUpdate
from .rows import BlogPost, Credential, CreditCharge, Execution, Idea, Output, PaymentReceipt, Usage, User

__all__ = [
    "BlogPost",
    "BlogPostContent",
    "ChargeStatus",
    "Credential",
    "CreditCharge",
    "CreditType",
    "Evaluation",
    "Execution",
    "ExecutionStatus",
    "ExpansionOutcome",
    "ExpansionResult",
    "ExpansionStart",
    "ExpansionStarted",
    "ExpansionStatus",
    "GitHubRepoContent",
    "GitHubSignIn",
    "IdLike",
    "Idea",
    "IdeaCreate",
    "IdeaStatus",
    "IdeaUpdate",
    "ImageContent",
    "Output",
    "OutputContent",
    "OutputFormat",
    "PaymentReceipt",
    "PaymentStatus",
    "Provider",
    "Stage",
    "StoredImage",
    "TwitterThreadContent",
    "Usage",
    "User",
    "UserCreate",
    "UserUpdate",
    "ValidationStatus",
]
