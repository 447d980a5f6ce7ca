"""The `idea-expansion` command line: a thin Typer shell over the SDK."""

from __future__ import annotations

from ._app import app, main

__all__ = ["app", "main"]
