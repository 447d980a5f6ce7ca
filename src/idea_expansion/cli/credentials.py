"""`idea-expansion credentials ...`: store a user's secrets, encrypted. A secret never comes from the
command line's arguments (they are visible to every user of the machine, in `ps` and shell histories):
it is read from stdin when stdin is not a terminal, else from a prompt that does not echo."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..types import Provider
from ._common import (
    DB_URL_HELP,
    JsonOption,
    command_errors,
    console,
    fail,
    open_client,
    print_json,
    safe,
    user_by_reference,
)

credentials_app = typer.Typer(help="Store users' credentials (encrypted with ENCRYPTION_KEY).", no_args_is_help=True)
DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]

# A token is one line; anything far longer is not a token (and is not worth encrypting).
_MAX_SECRET = 4096


def read_secret(prompt: str) -> str:
    """A secret from stdin when it is piped (its first line), else from a hidden prompt."""
    if sys.stdin is None or not sys.stdin.isatty():
        text = sys.stdin.read(_MAX_SECRET + 1) if sys.stdin is not None else ""
        lines = text.splitlines()
        secret = lines[0].strip() if lines else ""
    else:
        secret = str(typer.prompt(prompt, hide_input=True, err=True)).strip()  # stdout may carry --json
    if not secret:
        fail("no token given: pipe it on stdin (e.g. `gh auth token | idea-expansion credentials set-github ...`)")
    if len(secret) > _MAX_SECRET:
        fail(f"that is not a token: more than {_MAX_SECRET} characters")
    return secret


@credentials_app.command("set-github")
def set_github(
    user: Annotated[str, typer.Option("--user", "-u", help="The user's id or e-mail address.")],
    db_url: DbUrl = None,
    json: bool = JsonOption,
) -> None:
    """Store a user's GitHub token (for publishing repositories), encrypted under ENCRYPTION_KEY; it
    replaces their previous one. The token is read from stdin when piped, else from a prompt that does not
    echo; there is no option for it, so it never shows in `ps` or a shell history.

    Example: idea-expansion credentials set-github --user ada@example.com (then paste the token), or piped:
    gh auth token | idea-expansion credentials set-github --user ada@example.com
    """
    with command_errors(), open_client(db_url) as client:
        client.encryptor  # noqa: B018 - a missing ENCRYPTION_KEY fails here, before the token is asked for
        owner = user_by_reference(client, user)
        token = read_secret(f"GitHub token for {owner.email}")
        credential = client.credentials.set(Provider.GITHUB, token, user_id=owner.id)
        if json:
            print_json(credential)
            return
        console.print(
            f"[green]Stored[/] the GitHub token of {safe(owner.email)} (encrypted; credential {credential.id}, "
            f"{credential.validation_status.value})"
        )
