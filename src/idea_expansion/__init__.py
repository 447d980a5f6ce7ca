"""idea-expansion: Automated Idea Expansion on Supabase.

from idea_expansion import IdeaExpansion

with IdeaExpansion.from_env() as client:          # service role
    me = client.for_user(user_id)                 # every call as that user; RLS decides
    me.ideas.create(title="A CLI that explains regexes")
    client.credits.consume(user_id, idempotency_key=execution_id)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    DatabaseSetupError,
    DecryptionError,
    IdeaExpansionError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PipelineError,
    ProviderError,
    PublishError,
    StorageError,
    WorkerProcessError,
    WorkerThreadError,
)
from ._exceptions import deprecated_alias as _deprecated_alias
from ._version import __version__
from .types import (
    BlogPost,
    BlogPostContent,
    BlogSection,
    ChargeStatus,
    Credential,
    CreditCharge,
    CreditType,
    Execution,
    ExecutionStatus,
    Generation,
    GitHubRepoContent,
    Idea,
    IdeaStatus,
    ImageContent,
    ModelCall,
    Output,
    OutputFormat,
    PaymentReceipt,
    PaymentStatus,
    Provider,
    RepoFile,
    Stage,
    StoredImage,
    TwitterThreadContent,
    Usage,
    User,
    ValidationStatus,
)

if TYPE_CHECKING:
    from ._async_client import AsyncIdeaExpansion
    from ._client import IdeaExpansion
    from ._settings import Settings
    from .backends.postgres import PostgresBackend
    from .backends.rest import RestBackend
    from .crypto import Encryptor, generate_key
    from .resources._pagination import AsyncPage, AsyncPaginator, SyncPage

    ConnectionError = APIConnectionError  # the deprecated names, for code annotated with them (this release)
    TimeoutError = APITimeoutError

_LAZY = {
    "AsyncIdeaExpansion": "._async_client",
    "IdeaExpansion": "._client",
    "Settings": "._settings",
    "PostgresBackend": ".backends.postgres",
    "RestBackend": ".backends.rest",
    "Encryptor": ".crypto",
    "generate_key": ".crypto",
    "AsyncPage": ".resources._pagination",
    "AsyncPaginator": ".resources._pagination",
    "SyncPage": ".resources._pagination",
}
"""Names loaded on first use: `import idea_expansion` loads the types and errors, not a database driver,
the Supabase stack or the pipeline (a direct-Postgres service never loads supabase-py at all)."""

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncIdeaExpansion",
    "AsyncPage",
    "AsyncPaginator",
    "AuthenticationError",
    "BlogPost",
    "BlogPostContent",
    "BlogSection",
    "ChargeStatus",
    "ConfigurationError",
    "ConflictError",
    "Credential",
    "CreditCharge",
    "CreditType",
    "DatabaseSetupError",
    "DecryptionError",
    "Encryptor",
    "Execution",
    "ExecutionStatus",
    "Generation",
    "GitHubRepoContent",
    "Idea",
    "IdeaExpansion",
    "IdeaExpansionError",
    "IdeaStatus",
    "ImageContent",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "ModelCall",
    "NotFoundError",
    "Output",
    "OutputFormat",
    "PaymentReceipt",
    "PaymentStatus",
    "PermissionDeniedError",
    "PipelineError",
    "PostgresBackend",
    "Provider",
    "ProviderError",
    "PublishError",
    "RepoFile",
    "RestBackend",
    "Settings",
    "Stage",
    "StorageError",
    "StoredImage",
    "SyncPage",
    "TwitterThreadContent",
    "Usage",
    "User",
    "ValidationStatus",
    "WorkerProcessError",
    "WorkerThreadError",
    "__version__",
    "generate_key",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    # The deprecated ConnectionError / TimeoutError, kept for one release; read through here so that
    # reading them warns and `from idea_expansion import *` (which follows __all__) rebinds no builtin.
    return _deprecated_alias(__name__, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
