"""Typed rows, enums and parameters."""

from .enums import CreditType, ExecutionStatus, IdeaStatus, OutputFormat, PaymentStatus, Provider, ValidationStatus
from .params import GitHubSignIn, IdeaCreate, IdeaUpdate, UserCreate, UserUpdate
from .rows import BlogPost, Credential, CreditCharge, Execution, Idea, Output, PaymentReceipt, Usage, User

__all__ = [
    "BlogPost",
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
    "Usage",
    "User",
    "UserCreate",
    "UserUpdate",
    "ValidationStatus",
]
