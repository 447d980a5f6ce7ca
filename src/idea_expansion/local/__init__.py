"""Local databases without Docker: the Supabase-compatibility bootstrap, the migration runner and
the embedded PostgreSQL server."""

from __future__ import annotations

from .compat import bootstrap, database_kind
from .embedded import embedded_database_url, stop_embedded
from .migrations import MigrationStatus, ResetResult, migrate, migration_status, reset, run_seed
from .project import MigrationFile, SupabaseProject, find_project
from .sqlsplit import split_statements

__all__ = [
    "MigrationFile",
    "MigrationStatus",
    "ResetResult",
    "SupabaseProject",
    "bootstrap",
    "database_kind",
    "embedded_database_url",
    "find_project",
    "migrate",
    "migration_status",
    "reset",
    "resolve_database_url",
    "run_seed",
    "split_statements",
    "stop_embedded",
]


def resolve_database_url(explicit: str | None, configured: str | None) -> str:
    """The database to use: an explicit URL, else the configured DATABASE_URL, else the embedded server."""
    return explicit or configured or embedded_database_url()
