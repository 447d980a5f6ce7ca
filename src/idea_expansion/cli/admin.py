"""`idea-expansion admin ...`: grant credits after a payment, look at a user's usage, refund."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated

import typer
from rich.panel import Panel

from ._common import (
    DB_URL_HELP,
    JsonOption,
    command_errors,
    console,
    emit,
    fail,
    literal,
    open_client,
    print_json,
    safe,
    user_by_email,
)

admin_app = typer.Typer(help="Credits and payments.", no_args_is_help=True)
DbUrl = Annotated[str | None, typer.Option("--db-url", help=DB_URL_HELP)]

_CREDITS = re.compile(r"[1-9][0-9]{0,6}")
_AMOUNT = re.compile(r"[0-9]{1,8}(\.[0-9]{1,2})?")


def parse_credits(text: str) -> int:
    if not _CREDITS.fullmatch(text.strip()):
        fail(f"credits must be a positive whole number (like 5), not {text!r}")
    return int(text)


def parse_amount(text: str) -> Decimal:
    value = text.strip().removeprefix("$")
    if not _AMOUNT.fullmatch(value) or Decimal(value) <= 0:
        fail(f"amount must be a positive amount in USD with at most two decimals (like 5.00), not {text!r}")
    return Decimal(value).quantize(Decimal("0.01"))


@admin_app.command("grant-credits")
def grant_credits(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")],
    credits: Annotated[str, typer.Argument(help="Credits to grant: a positive whole number.")],
    amount: Annotated[str, typer.Argument(help="Amount paid in USD, e.g. 5.00.")],
    reference: Annotated[
        str,
        typer.Argument(help="The payment's reference, e.g. Buy Me a Coffee's (granted once; case and blanks ignored)."),
    ],
    notes: Annotated[str | None, typer.Argument(help="Notes for the receipt.")] = None,
    db_url: DbUrl = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Grant paid credits after verifying a payment; records the receipt and the credits atomically.

    Example: idea-expansion admin grant-credits user@example.com 5 5.00 BMC-12345
    """
    count, paid = parse_credits(credits), parse_amount(amount)
    with command_errors(), open_client(db_url) as client:
        console.print("💳 Processing credit grant...")
        console.print(
            f"User Email:        {safe(email)}\nCredits to Grant:  {count}\nAmount:            ${paid}\n"
            f"Reference:         {safe(reference)}"
        )
        if not yes and not typer.confirm("Grant these credits?"):
            raise typer.Abort()
        console.print("\nStep 1: Looking up user...")
        user = user_by_email(client, email)
        console.print(f"✅ User found: {safe(user.name or user.email)}")
        console.print("\nStep 2: Getting current credits...")
        before = client.credits.balance(user.id)
        console.print(
            f"Current Credits:   {before.total_remaining} ({before.free_expansions_remaining} free, "
            f"{before.paid_credits_remaining} paid)"
        )
        # The database compares references trimmed and case-insensitively; so does this check.
        wanted = reference.strip().lower()
        existing = next(
            (r for r in client.credits.history(user.id) if (r.bmc_reference or "").strip().lower() == wanted), None
        )
        console.print("\nStep 3: Creating payment receipt...")
        receipt = client.credits.grant(user.id, count, paid, reference, verified_by="admin-cli", notes=notes)
        console.print("\nStep 4: Verifying...")
        after = client.credits.balance(user.id)
        if existing is not None:
            console.print(
                f"⚠️  Reference {safe(reference)} was already granted on {existing.created_at:%Y-%m-%d}: "
                "no credits were added this time."
            )
        else:
            console.print("✅ Verification successful")
        title = "✨ Credits granted successfully!" if existing is None else "Nothing granted: reference already used"
        console.print(
            Panel(
                f"User:              {safe(user.email)}\n"
                f"Credits Added:     {0 if existing else count}\n"
                f"Previous Total:    {before.total_remaining}\n"
                f"New Total:         {after.total_remaining}\n"
                f"Receipt ID:        {receipt.id}\n"
                f"Reference:         {safe(receipt.bmc_reference or '(none)')}",
                title=title,
                expand=False,
            )
        )


@admin_app.command("usage")
def usage(
    email: Annotated[str, typer.Argument(help="The user's e-mail address.")],
    db_url: DbUrl = None,
    json: bool = JsonOption,
) -> None:
    """A user's credits, lifetime counters, payment history and last outputs (--json: as an object with
    user, balance, payments and last_outputs).

    Example: idea-expansion admin usage user@example.com
    """
    with command_errors(), open_client(db_url) as client:
        user = user_by_email(client, email)
        balance = client.credits.balance(user.id)
        if json:
            print_json(
                {
                    "user": user,
                    "balance": balance,
                    "payments": list(client.credits.history(user.id, limit=1000)),
                    "last_outputs": client.outputs.list(user_id=user.id, limit=5).data,
                }
            )
            return
        console.print(
            Panel(
                f"User ID:        {user.id}\n"
                f"Name:           {safe(user.name or '-')}\n"
                f"Signed up:      {user.created_at:%Y-%m-%d}\n\n"
                f"Free remaining: {balance.free_expansions_remaining}\n"
                f"Paid remaining: {balance.paid_credits_remaining}\n"
                f"Total remaining: {balance.total_remaining}\n\n"
                f"Used in total:  {balance.total_expansions_used} ({balance.total_free_used} free, "
                f"{balance.total_paid_used} paid)",
                title=literal(user.email),
                expand=False,
            )
        )
        emit(
            list(client.credits.history(user.id, limit=1000)),
            ["amount_usd", "credits_purchased", "status", "created_at", "bmc_reference", "notes"],
            title="Payment history",
        )
        emit(
            client.outputs.list(user_id=user.id, limit=5).data,
            ["format", "created_at", "published", "publication_url"],
            title="Last outputs",
        )


@admin_app.command("refund")
def refund(
    receipt_id: Annotated[str, typer.Argument(help="The receipt to refund.")],
    db_url: DbUrl = None,
    note: Annotated[str | None, typer.Option("--note", help="Why, for the receipt's notes.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Mark a receipt refunded and take back its unused paid credits (never below zero).

    Example: idea-expansion admin refund 550e8400-e29b-41d4-a716-446655440000 --note "chargeback"
    """
    try:
        uuid.UUID(receipt_id)
    except ValueError:
        fail(f"receipt id must be a UUID, not {receipt_id!r}")
    with command_errors(), open_client(db_url) as client:
        if not yes and not typer.confirm(f"Refund receipt {receipt_id}?"):
            raise typer.Abort()
        result = client.credits.refund(receipt_id, note=note)
        console.print(
            f"[green]Receipt {result.receipt_id} refunded[/]: {result.credits_removed} of "
            f"{result.credits_purchased} paid credits removed; {result.paid_credits_remaining} paid left."
        )
        if result.credits_removed < result.credits_purchased:
            console.print(
                f"{result.credits_purchased - result.credits_removed} of the purchased credits had already "
                "been spent (or were never granted), so they could not be taken back."
            )


@admin_app.command("rotate-keys")
def rotate_keys(db_url: DbUrl = None) -> None:
    """Re-encrypt every stored credential under ENCRYPTION_KEY, reading older ones with the keys in
    ENCRYPTION_KEYS_OLD. Prints how many were re-encrypted and the ids of any that could not be read;
    exit code 1 if any could not (keep the old keys until then).

    Example: idea-expansion admin rotate-keys --db-url postgresql://postgres@127.0.0.1:5432/postgres
    """
    with command_errors(), open_client(db_url) as client:
        report = client.credentials.rotate()
        console.print(f"[green]{report.rotated} credential(s) re-encrypted[/] under the current key.")
        if report.failed:
            for credential_id in report.failed:
                console.print(f"  could not read credential {credential_id}")
            fail(
                f"{len(report.failed)} could not be read (malformed, tampered with, or under a key missing from "
                "ENCRYPTION_KEYS_OLD): keep the old keys until they are fixed or deleted"
            )
        console.print("Every credential is under the current key: ENCRYPTION_KEYS_OLD can be removed.")
