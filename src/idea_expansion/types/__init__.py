"""Typed rows, enums and parameters."""

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
from .params import GitHubSignIn, IdeaCreate, IdeaUpdate, UserCreate, UserUpdate
from .rows import BlogPost, Credential, CreditCharge, Execution, Idea, Output, PaymentReceipt, Usage, User

__all__ = [
    "BlogPost",
    "ChargeStatus",
    "Credential",
    "CreditCharge",
    "CreditType",
    "Execution",
    "ExecutionStatus",
    "GitHubSignIn",
    "Idea",
    "IdeaCreate",
    "IdeaStatus",
    "IdeaUpdate",
    "Output",
    "OutputFormat",
    "PaymentReceipt",
    "PaymentStatus",
    "Provider",
    "Stage",
    "Usage",
    "User",
    "UserCreate",
    "UserUpdate",
    "ValidationStatus",
]
