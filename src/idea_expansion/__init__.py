"""idea-expansion: Automated Idea Expansion on Supabase."""

from __future__ import annotations

from ._exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    ConnectionError,
    DatabaseSetupError,
    IdeaExpansionError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TimeoutError,
)
from ._settings import Settings
from ._version import __version__

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionError",
    "DatabaseSetupError",
    "IdeaExpansionError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "Settings",
    "TimeoutError",
    "__version__",
]
