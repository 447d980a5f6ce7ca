"""Split a SQL script into statements, the way psql and the Supabase CLI do.

Semicolons end a statement only outside quotes, dollar-quoted bodies and comments; the Supabase CLI
records each statement of a migration in `schema_migrations.statements`, so we need the same split.
"""

from __future__ import annotations

import re

__all__ = ["split_statements"]

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def split_statements(sql: str) -> list[str]:
    """Return the statements of `sql`, stripped, without the terminating semicolons.

    Statements that hold only comments or whitespace are dropped.
    """
    statements: list[str] = []
    start = 0
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline == -1 else newline + 1
        elif ch == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif ch == "'":
            escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            i = _skip_quoted(sql, i, "'", backslash_escapes=escaped)
        elif ch == '"':
            i = _skip_quoted(sql, i, '"', backslash_escapes=False)
        elif ch == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            match = _DOLLAR_TAG.match(sql, i)
            if match:
                end = sql.find(match.group(0), match.end())
                i = n if end == -1 else end + len(match.group(0))
            else:
                i += 1
        elif ch == ";":
            _append(statements, sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    _append(statements, sql[start:])
    return statements


def _skip_block_comment(sql: str, i: int) -> int:
    depth = 0
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _skip_quoted(sql: str, i: int, quote: str, *, backslash_escapes: bool) -> int:
    i += 1
    n = len(sql)
    while i < n:
        ch = sql[i]
        if backslash_escapes and ch == "\\":
            i += 2
        elif ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _append(statements: list[str], chunk: str) -> None:
    text = chunk.strip()
    if _has_code(text):
        statements.append(text)


def _has_code(text: str) -> bool:
    """True when `text` holds something other than comments and whitespace."""
    without_line_comments = re.sub(r"--[^\n]*", "", text)
    without_comments = re.sub(r"/\*.*?\*/", "", without_line_comments, flags=re.DOTALL)
    return bool(without_comments.strip())
