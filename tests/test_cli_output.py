"""What the CLI prints from user data: Rich markup, emoji codes and terminal control characters in names,
titles, e-mails and errors are shown literally; `--csv` cells that a spreadsheet would run as a formula
are neutralised."""

from __future__ import annotations

import csv
import io
import itertools
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer

from idea_expansion import IdeaExpansion
from idea_expansion._exceptions import ConfigurationError
from idea_expansion._settings import Settings
from idea_expansion.cli._common import command_errors
from idea_expansion.pipeline import OfflineProvider, Pipeline, ProviderError
from idea_expansion.types import OutputFormat

from .conftest import ROOT, use_cli_environment
from .test_cli import ok, run

FAKE = "✅ Verification successful"

# What a hostile user stores (in a name, a title, a reference...) -> what the terminal must show.
VECTORS: dict[str, str] = {
    "[/]": "[/]",
    f"[bold red]{FAKE}[/]": f"[bold red]{FAKE}[/]",
    "[link=https://evil]x[/link]": "[link=https://evil]x[/link]",
    ":white_check_mark: Verification successful": ":white_check_mark: Verification successful",
    "\x1b[31mred\x1b[0m": "\\x1b[31mred\\x1b[0m",
    f"x\n{FAKE}": f"x\\n{FAKE}",
    "\u202egnp.exe": "\\u202egnp.exe",
    '=HYPERLINK("http://x")': '=HYPERLINK("http://x")',
    "tail\\": "tail\\",
}
# E-mail addresses cannot hold blanks or capitals: the same attacks, as e-mail prefixes.
EMAIL_VECTORS: dict[str, str] = {
    "[/]": "[/]",
    "[bold]x[/]": "[bold]x[/]",
    "[link=https://evil]x[/link]": "[link=https://evil]x[/link]",
    ":white_check_mark:": ":white_check_mark:",
    "\x1b[31mred": "\\x1b[31mred",
    '=hyperlink("http://x")': '=hyperlink("http://x")',
    "-2+3": "-2+3",
    "+sum(1)": "+sum(1)",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=250, cwd=ROOT)


def assert_literal(output: str, *shown: str, real_fakes: int = 0) -> None:
    """Every shown form is printed as is; no terminal control character and no faked line got through."""
    for text in shown:
        assert text in output, f"{text!r} not printed literally in:\n{output}"
    assert "\x1b" not in output, output
    assert "\u202e" not in output, output
    fakes = [line for line in output.splitlines() if line.strip().startswith(FAKE)]  # a status line of its own
    assert len(fakes) == real_fakes, fakes


def hostile_user(url: str, prefix: str, name: str) -> tuple[str, uuid.UUID]:
    email = f"{prefix}{uuid.uuid4().hex[:8]}@evil.test"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "insert into public.users (email, name) values (%s, %s) returning id", (email, name)
        ).fetchone()
    assert row is not None
    return email, row[0]


def add_idea(url: str, user_id: uuid.UUID, title: str) -> uuid.UUID:
    """Straight into the table, as a user can through the API (no client-side trimming)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "insert into public.ideas (user_id, title) values (%s, %s) returning id", (user_id, title)
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_neutralised(rows: list[dict[str, Any]]) -> None:
    """No cell starts like a formula, unless it is a plain number (data, never a formula)."""
    for row in rows:
        for column, cell in row.items():
            assert not str(cell).startswith(FORMULA_START) or PLAIN_NUMBER.fullmatch(str(cell)), (column, cell)


def test_error_messages_print_literally_with_their_brackets(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit), command_errors():
        raise ProviderError("OpenAI needs: pip install 'idea-expansion[llm]'")
    assert "pip install 'idea-expansion[llm]'" in capsys.readouterr().err
    with pytest.raises(typer.Exit), command_errors():
        raise ConfigurationError(f"bad [bold red]{FAKE}[/] and [/] and \x1b[2J")
    assert_literal(capsys.readouterr().err, f"bad [bold red]{FAKE}[/] and [/] and \\x1b[2J")

    for prefix, shown in EMAIL_VECTORS.items():
        email = f"{prefix}nobody@evil.test"
        for command in (["credits", email], ["admin", "usage", email], ["db", "check-ideas", email]):
            result = run(*command[:-1], "--db-url", cli_db, "--", command[-1])  # "--": "-2+3..." is no option
            assert isinstance(result.exception, SystemExit), (command, result.output, result.exception)
            assert result.exit_code == 1
            assert_literal(result.output, f"no user with e-mail {shown}nobody@evil.test")
    refused = run("admin", "grant-credits", "a@b.test", "[llm]", "5", "BMC-1", "--db-url", cli_db, "--yes")
    assert refused.exit_code == 1
    assert "not '[llm]'" in refused.output


def test_admin_commands_show_hostile_users_literally(cli_db: str) -> None:
    for (prefix, shown_email), (name, shown_name) in zip(itertools.cycle(EMAIL_VECTORS.items()), VECTORS.items()):
        email, _ = hostile_user(cli_db, prefix, name)
        printed_email = email.replace(prefix, shown_email, 1)
        # A hostile reference is refused by the database (ASCII letters, digits and . _ : / # - only), and
        # the refusal, which quotes nothing of it, prints as one literal line; the notes carry the text.
        refused = run("admin", "grant-credits", "--db-url", cli_db, "--yes", "--", email, "2", "2.00", name, name)
        assert refused.exit_code == 1, (name, refused.output, refused.exception)
        assert "a payment reference is 1-200 ASCII letters" in refused.output
        reference = f"BMC-{uuid.uuid4().hex[:8]}"
        granted = run("admin", "grant-credits", "--db-url", cli_db, "--yes", "--", email, "2", "2.00", reference, name)
        assert granted.exit_code == 0, (name, granted.output, granted.exception)
        assert_literal(granted.output, f"✅ User found: {shown_name}", f"Reference:         {reference}", real_fakes=1)
        assert f"User Email:        {printed_email}" in granted.output
        assert f"User:              {printed_email}" in granted.output
        usage = run("admin", "usage", "--db-url", cli_db, "--", email)
        assert usage.exit_code == 0, (name, usage.output, usage.exception)
        assert_literal(usage.output, f"Name:           {shown_name}", printed_email, shown_name)


def test_everyday_and_helper_commands_show_hostile_ideas_literally(cli_db: str) -> None:
    email, user_id = hostile_user(cli_db, "[/]", f"[bold red]{FAKE}[/]")
    ideas = {title: add_idea(cli_db, user_id, title) for title in VECTORS}
    shown_titles = list(VECTORS.values())
    for command in (["ideas", "list", "-u", email], ["db", "check-ideas", email], ["db", "check-join", email]):
        result = run(*command, "--db-url", cli_db)
        assert result.exit_code == 0, (command, result.output, result.exception)
        assert_literal(result.output, email, *shown_titles)
    added = run("ideas", "add", f"[bold red]{FAKE}[/] [/]", "-u", email, "--db-url", cli_db)
    assert added.exit_code == 0, (added.output, added.exception)
    assert_literal(added.output, f"[bold red]{FAKE}[/] [/]")
    archived = run("ideas", "archive", str(ideas["[/]"]), "--db-url", cli_db)
    assert archived.exit_code == 0, (archived.output, archived.exception)
    assert_literal(archived.output, "Archived [/]")

    # one expansion per format, through the CLI, each showing what came out (free credits: 5)
    formats = list(OutputFormat)
    titles = [f"[bold red]{FAKE}[/]", "\x1b[31mred\x1b[0m", "[link=https://evil]x[/link]", "tail\\"]
    for title, fmt in zip(titles, formats, strict=True):
        expanded = run("expand", "--idea", str(ideas[title]), "-f", fmt.value, "--db-url", cli_db)
        assert expanded.exit_code == 0, (title, fmt, expanded.output, expanded.exception)
        assert_literal(expanded.output, VECTORS[title], email)
    credits = run("credits", email, "--db-url", cli_db)
    assert credits.exit_code == 0, (credits.output, credits.exception)
    assert_literal(credits.output, f"{email}: 1 credits left")
    for command in (["outputs", "list", "-u", email], ["db", "check-outputs", email], ["db", "check-join", email]):
        result = run(*command, "--db-url", cli_db)
        assert result.exit_code == 0, (command, result.output, result.exception)
        assert_literal(result.output, email)


def test_outputs_show_renders_hostile_content_literally(cli_db: str) -> None:
    _, user_id = hostile_user(cli_db, "x", "Show Me")
    with psycopg.connect(cli_db, autocommit=True) as conn:  # enough credits for every vector and format
        conn.execute("update public.usage_tracking set paid_credits_remaining = 100 where user_id = %s", (user_id,))
    settings = Settings()
    with (
        IdeaExpansion(settings=settings, backend="postgres", database_url=cli_db) as client,
        Pipeline(client, provider=OfflineProvider()) as pipeline,
    ):
        for title, shown in VECTORS.items():
            for fmt in OutputFormat:
                idea_id = add_idea(cli_db, user_id, title)
                result = pipeline.expand(user_id, idea_id=idea_id, format=fmt)
                assert result.outputs, (title, fmt, result.execution.error_message)
                output_id = str(result.outputs[0].id)
                shown_result = run("outputs", "show", output_id, "--db-url", cli_db)
                assert shown_result.exit_code == 0, (title, fmt, shown_result.output, shown_result.exception)
                # the offline provider folds blanks (line breaks included) in what it writes
                assert_literal(shown_result.output, *([shown] if "\n" not in title else []))
        # a link in a rendered post shows where it goes, not only the words its author chose
        idea_id = add_idea(cli_db, user_id, "Links")
        with psycopg.connect(cli_db, autocommit=True) as conn:
            conn.execute(
                "update public.ideas set description = 'Read [the docs](https://evil.test/x).' where id = %s",
                (idea_id,),
            )
        post = pipeline.expand(user_id, idea_id=idea_id, format=OutputFormat.BLOG_POST).outputs[0]
        assert "the docs (https://evil.test/x)" in ok("outputs", "show", str(post.id), "--db-url", cli_db)


def test_reports_show_hostile_rows_literally_and_csv_cells_are_neutralised(cli_db: str) -> None:
    emails: dict[str, str] = {}
    settings = Settings()
    with (
        IdeaExpansion(settings=settings, backend="postgres", database_url=cli_db) as client,
        Pipeline(client, provider=OfflineProvider()) as pipeline,
    ):
        for (prefix, shown_email), value in zip(itertools.cycle(EMAIL_VECTORS.items()), VECTORS):
            email, user_id = hostile_user(cli_db, prefix, value)
            emails[email] = email.replace(prefix, shown_email, 1)
            client.credits.grant(user_id, 1, "1.00", f"BMC-{uuid.uuid4().hex[:8]}", notes=value)
            pipeline.expand(user_id, idea_id=add_idea(cli_db, user_id, value), format=OutputFormat.TWITTER_THREAD)
            with psycopg.connect(cli_db, autocommit=True) as conn:
                conn.execute(
                    "insert into public.executions (user_id, status, error_step, error_message, completed_at) "
                    "values (%s, 'failed', %s, %s, now())",
                    (user_id, value[:64], value),
                )
    reports = [
        ["report", "users"],
        ["report", "top-users", "--limit", "1000"],
        ["report", "failed"],
        ["report", "payments"],
        ["report", "payments", "--summary"],
        ["report", "executions", "--limit", "1000"],
        ["report", "executions", "--summary"],
    ]
    for command in reports:
        table = run(*command, "--db-url", cli_db)
        assert table.exit_code == 0, (command, table.output, table.exception)
        assert_literal(table.output, *emails.values())
        as_csv = run(*command, "--csv", "--db-url", cli_db)
        assert as_csv.exit_code == 0, (command, as_csv.output, as_csv.exception)
        rows = parse_csv(as_csv.output)
        assert_neutralised(rows)
        printed = {row["email"] for row in rows}
        for shown_email in emails.values():
            expected = "'" + shown_email if shown_email.startswith(FORMULA_START) else shown_email
            assert expected in printed, (command, expected)
    for command in (["report", "failed"], ["report", "executions", "--limit", "1000"]):
        assert_literal(run(*command, "--db-url", cli_db).output, VECTORS["[/]"], VECTORS["\x1b[31mred\x1b[0m"])
    payments = parse_csv(ok("report", "payments", "--csv", "--db-url", cli_db))
    # References can no longer carry hostile text (the database admits ASCII letters, digits and . _ : / # -).
    references = {row["bmc_reference"] for row in payments if row["email"].lstrip("'") in emails}
    assert references
    assert all(re.fullmatch(r"BMC-[0-9a-f]{8}", ref) for ref in references), references
    assert all(row["amount_usd"] == "1.00" for row in payments if row["email"].lstrip("'") in emails)


def test_csv_neutralises_formula_cells_and_shows_control_characters(cli_db: str) -> None:
    email, user_id = hostile_user(cli_db, "=cmd", "Csv")
    titles = {  # stored title -> CSV cell
        '=HYPERLINK("http://x")': '\'=HYPERLINK("http://x")',
        "+1+1": "'+1+1",
        "-2+3": "'-2+3",
        "@SUM(1)": "'@SUM(1)",
        "\t=1+1": "'\t=1+1",
        "\r=1+1": "\\r=1+1",  # a carriage return would move a terminal's cursor: shown, so never a formula
        "\x1b[2J=1": "\\x1b[2J=1",
        "-5": "-5",  # a plain number is data, never a formula
        "a=b": "a=b",
        "two\nlines": "two\\nlines",  # a line break in a cell would draw a fake row in a terminal
    }
    for title in titles:
        add_idea(cli_db, user_id, title)
    listed = ok("ideas", "list", "-u", email, "--csv", "--db-url", cli_db)
    assert "\x1b" not in listed
    rows = parse_csv(listed)
    assert_neutralised(rows)
    assert sorted(row["title"] for row in rows) == sorted(titles.values())
    users = parse_csv(ok("report", "users", "--csv", "--db-url", cli_db))
    assert_neutralised(users)
    assert "'" + email in {row["email"] for row in users}
