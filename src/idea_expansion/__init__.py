"""idea-expansion: Automated Idea Expansion on Supabase.

from idea_expansion import IdeaExpansion

with IdeaExpansion.from_env() as client:          # service role
    me = client.for_user(user_id)                 # every call as that user; RLS decides
    me.ideas.create(title="A CLI that explains regexes")
    client.credits.consume(user_id, idempotency_key=execution_id)
"""

from __future__ import annotations

from ._client import IdeaExpansion
from ._exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    ConnectionError,
    DatabaseSetupError,
    DecryptionError,
    IdeaExpansionError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PipelineError,
    StorageError,
    TimeoutError,
)
from ._settings import Settings
from ._version import __version__
from .backends.postgres import PostgresBackend
from .backends.rest import RestBackend
from .crypto import Encryptor, generate_key
from .resources.ideas import IdeaPage
from .types import (
    BlogPost,
    ChargeStatus,
    Credential,
    CreditCharge,
    CreditType,
    Execution,
    ExecutionStatus,
    Idea,
    IdeaStatus,
    Output,
    OutputFormat,
    PaymentReceipt,
    PaymentStatus,
    Provider,
    Stage,
    Usage,
    User,
    ValidationStatus,
)

__all__ = [
    "APIError",
    "AuthenticationError",
    "BlogPost",
    "ChargeStatus",
    "ConfigurationError",
    "ConflictError",
    "ConnectionError",
    "Credential",
    "CreditCharge",
    "CreditType",
    "DatabaseSetupError",
    "DecryptionError",
    "Encryptor",
    "Execution",
    "ExecutionStatus",
    "Idea",
    "IdeaExpansion",
    "IdeaExpansionError",
    "IdeaPage",
    "IdeaStatus",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "NotFoundError",
    "Output",
    "OutputFormat",
    "PaymentReceipt",
    "PaymentStatus",
    "PermissionDeniedError",
    "PipelineError",
    "PostgresBackend",
    "Provider",
    "RestBackend",
    "Settings",
    "Stage",
    "StorageError",
    "TimeoutError",
    "Usage",
    "User",
    "ValidationStatus",
    "__version__",
    "generate_key",
]
