from __future__ import annotations

import typer

from .db import db_app

app = typer.Typer(
    name="idea-expansion",
    help="Automated Idea Expansion on Supabase: database, admin and pipeline commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")


def main() -> None:
    """Console-script entry point."""
    app()
