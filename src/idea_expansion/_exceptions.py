"""The idea-expansion error tree. Every error the SDK raises to its callers is one of these:

    IdeaExpansionError
    ├── ConfigurationError            a setting is missing or malformed (says how to set it)
    ├── APIError(code, message, details, hint, raw)
    │   ├── AuthenticationError       PGRST301/PGRST302: no or bad JWT
    │   ├── PermissionDeniedError     42501: RLS or a grant refused the call
    │   ├── NotFoundError             PGRST116, PT404: no such row / user
    │   ├── ConflictError             23505, 23503: duplicate or dangling reference; PT409: a run (or
    │   │                             its idea) is not in a state that allows the call
    │   ├── InvalidRequestError       23514, 23502, 22xxx, P0001: the input broke a rule
    │   ├── InsufficientCreditsError  PT402: no credits left
    │   └── StorageError              Supabase Storage (or the local store) failed for another reason
    ├── APIConnectionError            the database or API could not be reached
    │   └── APITimeoutError           it did not answer in time
    ├── DecryptionError               a credential cannot be decrypted (tampered, moved, wrong key)
    ├── DatabaseSetupError            the local database could not be bootstrapped or migrated
    ├── PipelineError(execution_id, stage)  an expansion failed; the run is recorded as failed
    ├── ProviderError(failed_calls)   a model provider failed or answered off-schema (pipeline)
    ├── PublishError(status, errors)  GitHub refused or failed to publish a repository (pipeline)
    ├── WorkerProcessError(processed, exit_codes)  a worker process died (pipeline)
    └── WorkerThreadError             a worker's claim loop ended on what it does not catch (pipeline)

Errors are chosen in one function, `error_from_code`, by SQLSTATE / PostgREST code (and Storage's
error code and status), never by message text.

`APITimeoutError` is an `APIConnectionError`, as in openai-python (and as httpx's timeouts are transport
errors): both mean "no answer from the server", and a caller that retries one retries the other. The
pipeline's errors are defined here, not in the pipeline package, so that `idea_expansion.ProviderError`
and friends are importable (and catchable) without importing the pipeline.

`ConnectionError` and `TimeoutError` are deprecated aliases of `APIConnectionError` and `APITimeoutError`,
kept for one release: the old names shadowed Python's builtins. Reading them warns
(`DeprecationWarning`); they are not in `__all__`, so `from idea_expansion import *` rebinds no builtin.
Note that `except ConnectionError` (the alias) now also catches timeouts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "DatabaseSetupError",
    "DecryptionError",
    "FailedCall",
    "IdeaExpansionError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "PipelineError",
    "ProviderError",
    "PublishError",
    "StorageError",
    "WorkerProcessError",
    "WorkerThreadError",
    "auth_error",
    "error_from_code",
]


class IdeaExpansionError(Exception):
    """Base class of every error raised by idea-expansion."""


class ConfigurationError(IdeaExpansionError):
    """A required setting is missing or malformed. The message names the variable and how to set it."""


class DatabaseSetupError(IdeaExpansionError):
    """The database could not be bootstrapped, migrated or seeded."""


class DecryptionError(IdeaExpansionError):
    """A stored credential could not be decrypted: tampered with, moved to another user or provider,
    malformed, or encrypted under a key that is not configured. The message never holds the secret."""


class PipelineError(IdeaExpansionError):
    """An expansion failed at `stage`. The execution is recorded as failed and its credit released.

    Attributes:
        execution_id: The failed execution.
        stage: The stage that failed (also the execution's error_step).
    """

    def __init__(self, message: str, *, execution_id: Any, stage: str) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.stage = stage

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle (a worker process, a task queue) rebuilds an exception from its positional args alone,
        # which would miss the keyword-only ones.
        return (_rebuilt, (type(self), self.args, self.__dict__))


@dataclass(frozen=True)
class FailedCall:
    """A model call that failed, after it may have spent tokens: an answer cut at the output cap, invalid
    JSON or one that does not fit the schema (the tokens the API reported), or no answer at all (a
    connection or HTTP error: 0 tokens, `usage_reported` False). Defined here, beside `ProviderError` which
    carries it; `idea_expansion.pipeline.providers` exports it."""

    provider: str
    """"openai" (also any OpenAI-compatible server) or "anthropic"."""
    model: str
    """The model the API said answered, else the one asked for."""
    input_tokens: int
    output_tokens: int
    error: str
    """What went wrong (the `ProviderError` message)."""
    usage_reported: bool
    """The API reported the tokens; False when it sent no usage (or no answer), and the tokens are 0."""


class ProviderError(IdeaExpansionError):
    """A model provider failed (after its own retries) or returned output that does not fit the schema.

    Attributes:
        failed_calls: The model calls that failed on the way, with the tokens each may have spent: one
            for a model provider, every provider's for a fallback chain whose providers all failed.
    """

    def __init__(self, message: str, *, failed_calls: tuple[FailedCall, ...] = ()) -> None:
        super().__init__(message)
        self.failed_calls = tuple(failed_calls)


class PublishError(IdeaExpansionError):
    """GitHub refused or failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []
        """GitHub's structured `errors` list (resource, field, code), when it sent one."""

    @property
    def name_taken(self) -> bool:
        """A 422 whose error is about the repository name: it exists already on this account."""
        return self.status == 422 and any(
            isinstance(e, dict) and e.get("resource") == "Repository" and e.get("field") == "name" for e in self.errors
        )


class WorkerProcessError(IdeaExpansionError):
    """A worker process died (crashed, was killed, or could not start); the others were stopped.

    Attributes:
        processed: Runs the worker processes took before they stopped (as `run_worker` returns).
        exit_codes: Exit code of each process that died, by process index (negative: killed by that signal).
    """

    def __init__(self, message: str, *, processed: int, exit_codes: dict[int, int]) -> None:
        super().__init__(message)
        self.processed = processed
        self.exit_codes = exit_codes

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (type(self), self.args, self.__dict__))


class WorkerThreadError(IdeaExpansionError):
    """A worker's claim loop ended on something it does not catch (SystemExit from a provider, say);
    the other loops finished their runs in hand and stopped. In a worker process this exits it with
    code 1, so the parent reports `WorkerProcessError`."""


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """An unpickled exception whose constructor takes required keyword arguments: its args and attributes
    as they were, without calling that constructor."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class APIConnectionError(IdeaExpansionError):
    """The database or the Supabase API could not be reached."""


class APITimeoutError(APIConnectionError):
    """The database or the Supabase API did not answer in time (a kind of `APIConnectionError`)."""


class APIError(IdeaExpansionError):
    """The database (directly or through PostgREST) refused a request.

    Attributes:
        code: SQLSTATE or PostgREST error code, e.g. ``"PT402"`` or ``"42501"``.
        message: The server's message.
        details: The server's detail text, if any.
        hint: The server's hint, if any.
        raw: The raw error payload as received.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: str | None = None,
        hint: str | None = None,
        raw: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.raw = raw

    def __str__(self) -> str:
        text = f"{self.message} (code {self.code})" if self.code else self.message
        if self.hint:
            text += f". Hint: {self.hint}"
        return text


class AuthenticationError(APIError):
    """The request carried no valid JWT."""


class PermissionDeniedError(APIError):
    """Row-level security or a grant refused the request."""


class NotFoundError(APIError):
    """The requested row (or user) does not exist, or is not visible to the caller."""


class ConflictError(APIError):
    """A unique or foreign-key rule was broken (duplicate slug, reused reference, ...), or (PT409) a run is
    not in a state that allows the call: an invalid status transition, an idea whose run is in progress."""


class InvalidRequestError(APIError):
    """The input broke a rule: a CHECK constraint, a status transition, an out-of-range argument."""


class InsufficientCreditsError(APIError):
    """The user has no free or paid credits left."""


class StorageError(APIError):
    """Supabase Storage (or the local store) refused a request for another reason."""


_EXACT: dict[str, type[APIError]] = {
    "PT402": InsufficientCreditsError,
    "PT404": NotFoundError,
    "PGRST116": NotFoundError,
    "PGRST301": AuthenticationError,
    "PGRST302": AuthenticationError,
    "42501": PermissionDeniedError,
    "PT409": ConflictError,
    "23505": ConflictError,
    "23503": ConflictError,
    "23514": InvalidRequestError,
    "23502": InvalidRequestError,
    "P0001": InvalidRequestError,
}


_STORAGE_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
}


def error_from_code(
    code: str | None,
    message: str,
    *,
    status: int | str | None = None,
    details: str | None = None,
    hint: str | None = None,
    raw: Any = None,
) -> APIError:
    """The most specific `APIError` for a failure, from its code alone; the one place errors are mapped.

    `code` is a SQLSTATE or PostgREST code (PT402, 42501, PGRST116, ...), or for Supabase Storage its
    `error` field, which comes with the `statusCode` as `status`. Storage reports an RLS refusal as
    `Unauthorized` (statusCode 403) and everything else by status.
    """
    cls = _EXACT.get(code or "")
    if cls is None and (code or "").startswith("22"):
        # Class 22 is "data exception": bad input of every kind (invalid uuid, null argument, ...).
        cls = InvalidRequestError
    if cls is None and status is not None:
        try:
            status_code: int | None = int(status)
        except ValueError:
            status_code = None
        cls = PermissionDeniedError if code == "Unauthorized" else _STORAGE_STATUS.get(status_code or 0, StorageError)
    return (cls or APIError)(message, code=code, details=details, hint=hint, raw=raw)


# Supabase Auth's error codes, as the codes the rest of the SDK maps (so a taken address is the same
# ConflictError, code 23505, on both backends); then its HTTP statuses, for codes not listed.
_AUTH_CODES = {
    "email_exists": "23505",
    "user_already_exists": "23505",
    "phone_exists": "23505",
    "email_address_invalid": "22023",
    "validation_failed": "22023",
    "user_not_found": "PT404",
    "not_admin": "42501",
    "no_authorization": "PGRST301",
    "bad_jwt": "PGRST301",
}
_AUTH_STATUS = {400: "22023", 401: "PGRST301", 403: "42501", 404: "PT404", 409: "23505", 422: "22023"}


def auth_error(code: str | None, message: str, *, status: int | None = None) -> APIError:
    """The `APIError` for a Supabase Auth failure: its code (or, failing that, its HTTP status) read as
    the code the database would have raised, then mapped by `error_from_code`."""
    mapped = _AUTH_CODES.get(str(code)) or _AUTH_STATUS.get(status or 0)
    return error_from_code(
        mapped, message, details=f"Supabase Auth: {code or status}", raw={"code": code, "status": status}
    )


_DEPRECATED_ALIASES: dict[str, type[IdeaExpansionError]] = {
    "ConnectionError": APIConnectionError,
    "TimeoutError": APITimeoutError,
}


def deprecated_alias(module: str, name: str) -> type[IdeaExpansionError]:
    """A deprecated name's class, with a `DeprecationWarning` naming the new one; for a module
    `__getattr__` (this module's and the package's). Raises `AttributeError` for any other name."""
    cls = _DEPRECATED_ALIASES.get(name)
    if cls is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(
        f"idea_expansion.{name} is deprecated and will be removed in the next release: use "
        f"idea_expansion.{cls.__name__} (the old name shadows Python's built-in {name})",
        DeprecationWarning,
        stacklevel=3,  # this function, the module's __getattr__, then the code that read the name
    )
    return cls


def __getattr__(name: str) -> type[IdeaExpansionError]:
    return deprecated_alias(__name__, name)


if TYPE_CHECKING:  # so that code annotated with the old names still type-checks for this release
    ConnectionError = APIConnectionError
    TimeoutError = APITimeoutError
