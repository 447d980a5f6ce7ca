"""`idea-expansion users ...`: create people."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import DB_URL_HELP, JsonOption, command_errors, console, open_client, print_json, safe

users_app = typer.Typer(help="Create users.", no_args_is_help=True)
DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The user's e-mail address (the service vouches for it).")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="The user's name.")] = None,
    db_url: DbUrl = None,
    json: bool = JsonOption,
) -> None:
    """Create a user, as the SDK does (`client.users.create`): on the Supabase API also their Supabase
    Auth account, address confirmed. The database gives them 5 free credits. Prints the new user's id
    (with --json, the user).

    Example: idea-expansion users add ada@example.com --name "Ada Lovelace"
    """
    with command_errors(), open_client(db_url) as client:
        user = client.users.create(email=email, name=name)
        if json:
            print_json(user)
            return
        named = f" ({safe(user.name)})" if user.name else ""
        console.print(f"[green]Created[/] {user.id}: {safe(user.email)}{named}")
