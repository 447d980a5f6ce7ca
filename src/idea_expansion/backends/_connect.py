"""The first connection of a Postgres backend (sync or async): a bad database URL fails at once, and an
unreachable database within seconds, with one clear error.

A pool left to find out by itself retries in the background, logs a warning per attempt and gives up only
at its timeout with "couldn't get a connection", the reason lost. So the URL is parsed first (a
malformed one is a `ConfigurationError`), and one plain connection, with a short connect timeout, is made
before the pool opens: its error says what is wrong (refused, timed out, bad password) in one line.

libpq repeats the URL in some messages, password included: every message made here is redacted.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .._exceptions import APIConnectionError, ConfigurationError

__all__ = ["CONNECT_TIMEOUT_S", "check_database_url", "connect_once", "connect_once_async", "with_connect_timeout"]

CONNECT_TIMEOUT_S = 3
"""Seconds a connection attempt may take (libpq's connect_timeout; its floor is 2) unless the URL sets its own:
enough for any reachable server, short enough that a wrong host is reported at once, not after 130 s."""

# The password in a URL's user info (scheme://user:password@host) or in a key=value connection string.
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):([^@\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def check_database_url(database_url: str) -> None:
    """Raise `ConfigurationError` now if `database_url` is not a PostgreSQL URL (or libpq connection string)."""
    try:
        params = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as exc:
        reason = redacted(str(exc).strip(), database_url)
    except UnicodeEncodeError:  # a lone surrogate (an environment variable holding undecodable bytes)
        reason = "it is not valid Unicode"
    else:
        ports = str(params.get("port") or "").split(",")
        if all(port.strip().isdigit() or not port.strip() for port in ports):
            return
        reason = f"the port must be a number, not {params['port']!r}"
    raise ConfigurationError(
        f"DATABASE_URL is not a valid PostgreSQL URL ({reason}): expected postgresql://user:password@host:5432/database"
    )


def with_connect_timeout(database_url: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with the short connect timeout, unless the URL chose one itself."""
    if "connect_timeout" in conninfo_to_dict(database_url):
        return arguments
    return arguments | {"connect_timeout": CONNECT_TIMEOUT_S}


def connect_once(database_url: str, arguments: dict[str, Any]) -> None:
    """Connect once and close, so that an unreachable database fails here and not inside the pool.

    Raises:
        APIConnectionError: the server refused, did not answer in time, or turned the login down.
    """
    try:
        psycopg.Connection.connect(database_url, **arguments).close()
    except psycopg.OperationalError as exc:
        raise unreachable(exc, database_url) from None


async def connect_once_async(database_url: str, arguments: dict[str, Any]) -> None:
    """`connect_once` for the async backend."""
    try:
        conn = await psycopg.AsyncConnection.connect(database_url, **arguments)
    except psycopg.OperationalError as exc:
        raise unreachable(exc, database_url) from None
    await conn.close()


def unreachable(exc: psycopg.OperationalError, database_url: str) -> APIConnectionError:
    """One line saying which database cannot be reached and why (libpq's first line is the reason)."""
    params = conninfo_to_dict(database_url)
    where = f"{params.get('host') or 'the local socket'}:{params.get('port') or 5432}/{params.get('dbname') or ''}"
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        seconds = params.get("connect_timeout") or CONNECT_TIMEOUT_S
        reason = f"no answer within {seconds} s ({reason})"
    return APIConnectionError(f"cannot connect to the database at {redacted(where + ': ' + reason, database_url)}")


def redacted(text: str, database_url: str) -> str:
    """`text` with the password of `database_url` (and any password= value) masked."""
    passwords = [match.group(2) for match in _URL_PASSWORD.finditer(database_url)]
    passwords += [match.group(2).strip("'") for match in _KEYWORD_PASSWORD.finditer(database_url)]
    text = _URL_PASSWORD.sub(lambda match: f"{match.group(1)}:***@", text)
    text = _KEYWORD_PASSWORD.sub(lambda match: f"{match.group(1)}***", text)
    for password in passwords:
        if password:
            text = text.replace(password, "***")
    return text
