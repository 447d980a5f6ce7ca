"""The command line of issue 12: --version, log lines, users add, credentials set-github, outputs publish,
enqueue, worker --provider, --json where scripts need it, expand with nothing pending, and the run record."""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import re
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import respx

from idea_expansion import IdeaExpansion
from idea_expansion._settings import Settings

from .conftest import ROOT, use_cli_environment
from .test_cli import new_user, ok, run
from .test_github_publisher import mock_github

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) [a-z_.]+: ")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=ROOT)
    for name in ("ENCRYPTION_KEY", "ENCRYPTION_KEYS_OLD", "IDEA_EXPANSION_PROVIDER", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def user_id(url: str, email: str) -> uuid.UUID:
    return query(url, "select id from public.users where email = %s", email)[0][0]  # type: ignore[no-any-return]


def add_idea(url: str, email: str, title: str = "A library to parse dates") -> str:
    return ok("ideas", "add", title, "-u", email, "--db-url", url).split()[1].rstrip(":")


def a_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- --version, users add -------------------------------------------------------------------------------------
def test_version_prints_the_installed_version() -> None:
    result = run("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"idea-expansion {importlib.metadata.version('idea-expansion')}\n"


def test_users_add_creates_a_user_with_the_sdk_and_prints_the_id(cli_db: str) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.test"
    output = ok("users", "add", email, "--name", "[bold]Ada[/] \x1b[31m", "--db-url", cli_db)
    created = re.search(rf"Created ({UUID_RE}): {re.escape(email)}", output)
    assert created is not None, output
    assert "[bold]Ada[/] \\x1b[31m" in output  # the name is data, printed literally
    assert user_id(cli_db, email) == uuid.UUID(created.group(1))
    usage = "select free_expansions_remaining from public.usage_tracking where user_id = %s"
    assert query(cli_db, usage, created[1]) == [(5,)]
    assert ok("credits", email, "--db-url", cli_db).startswith(f"{email}: 5 credits left")

    other = f"json-{uuid.uuid4().hex[:8]}@example.test"
    result = run("users", "add", other.upper(), "--json", "--db-url", cli_db)
    assert result.exit_code == 0, result.output
    user = json.loads(result.stdout)
    assert (user["email"], user["name"], user["id"]) == (other, None, str(user_id(cli_db, other)))

    taken = run("users", "add", email, "--db-url", cli_db)
    assert taken.exit_code == 1
    assert taken.output.startswith("error:")
    assert "Traceback" not in taken.output


# -- credentials set-github -----------------------------------------------------------------------------------
def test_set_github_takes_the_token_from_stdin_never_from_argv(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, encryption_key: str
) -> None:
    email = new_user(cli_db)
    owner = user_id(cli_db, email)
    assert "--token" not in ok("credentials", "set-github", "--help")
    as_option = run("credentials", "set-github", "--user", email, "--token", "ghp_x", "--db-url", cli_db)
    assert as_option.exit_code == 2  # no such option: a token in argv shows in `ps` and shell histories
    assert "No such option" in as_option.output

    # Without ENCRYPTION_KEY: the typed configuration error, before the token is read; nothing stored.
    missing = run("credentials", "set-github", "--user", email, "--db-url", cli_db, input="ghp_never\n")
    assert missing.exit_code == 1
    assert "ENCRYPTION_KEY is not set" in missing.output
    assert query(cli_db, "select count(*) from public.credentials where user_id = %s", owner) == [(0,)]

    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    token = f"ghp_{uuid.uuid4().hex}"
    stored = ok("credentials", "set-github", "--user", email, "--db-url", cli_db, input=f"{token}\n")
    assert "Stored the GitHub token of" in stored
    assert token not in stored
    [(ciphertext,)] = query(
        cli_db, "select encrypted_value from public.credentials where user_id = %s and provider = 'github'", owner
    )
    assert token not in str(ciphertext)
    settings = Settings(ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", database_url=cli_db) as sdk:
        assert sdk.credentials.get_secret("github", user_id=owner) == token
        # By id too, replacing the previous token; --json prints the credential's metadata only.
        result = run("credentials", "set-github", "-u", str(owner), "--json", "--db-url", cli_db, input="ghp_second")
        assert result.exit_code == 0, result.output
        credential = json.loads(result.stdout)
        assert (credential["user_id"], credential["provider"]) == (str(owner), "github")
        assert "encrypted_value" not in credential
        assert sdk.credentials.get_secret("github", user_id=owner) == "ghp_second"

    empty = run("credentials", "set-github", "--user", email, "--db-url", cli_db, input="\n")
    assert empty.exit_code == 1
    assert "no token given" in empty.output


def test_at_a_terminal_the_token_is_asked_for_without_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    from idea_expansion.cli import credentials

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked: list[tuple[str, dict[str, Any]]] = []

    def prompt(text: str, **options: Any) -> str:
        asked.append((text, options))
        return " ghp_typed "

    monkeypatch.setattr(sys, "stdin", Terminal("ghp_not_read_from_a_terminal\n"))
    monkeypatch.setattr(credentials.typer, "prompt", prompt)
    assert credentials.read_secret("GitHub token for ada@example.com") == "ghp_typed"
    # The prompt goes to stderr: stdout may be a script's JSON (--json), and a prompt there would break it.
    assert asked == [("GitHub token for ada@example.com", {"hide_input": True, "err": True})]


# -- expand: nothing pending, the record, --json --------------------------------------------------------------
def test_expand_with_nothing_pending_says_so_and_records_no_run(cli_db: str) -> None:
    email = new_user(cli_db)
    owner = user_id(cli_db, email)
    for command in (["expand"], ["expand", "--json"], ["enqueue"]):
        result = run(*command, "-u", email, "--db-url", cli_db)
        assert result.exit_code == 1, result.output
        assert f"no pending idea to expand for {email}" in result.stderr
        assert "Traceback" not in result.output
        if "--json" in command:
            assert result.stdout == ""
    # The only idea is in a run already: still nothing pending for another one.
    idea = add_idea(cli_db, email)
    assert re.search(rf"Queued run {UUID_RE}", ok("enqueue", "--idea", idea, "--db-url", cli_db))
    again = run("expand", "-u", email, "--db-url", cli_db)
    assert again.exit_code == 1
    assert "no pending idea to expand" in again.stderr
    runs = query(cli_db, "select status from public.executions where user_id = %s", owner)
    assert runs == [("queued",)]  # the queued run, and no failed one
    charges = query(cli_db, "select status from public.credit_charges where user_id = %s", owner)
    assert charges == [("held",)]  # the queued run's hold only
    assert "4 credits left (4 free, 0 paid); 0 used" in ok("credits", email, "--db-url", cli_db)


def test_expand_shows_tokens_and_charge_and_json_is_only_json(cli_db: str) -> None:
    email = new_user(cli_db)
    add_idea(cli_db, email, "Plain offline run")
    shown = ok("expand", "-u", email, "-f", "blog_post", "--db-url", cli_db)
    assert re.search(r"completed run .*, 0 tokens \(0 in, 0 out\)", shown), shown
    assert "generation: offline; charged" in shown
    assert "model calls" in shown
    assert "offline-templates" in shown
    assert "fallback to offline templates" not in shown

    add_idea(cli_db, email, "As JSON")
    result = run("expand", "-u", email, "-f", "twitter_thread", "--json", "--db-url", cli_db)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the whole of stdout: the progress bar went to stderr
    assert data["execution"]["status"] == "completed"
    assert data["execution"]["generation"] == "offline"
    assert data["execution"]["charged"] is True
    assert data["output"]["format"] == "twitter_thread"
    assert data["balance"]["free_expansions_remaining"] == 3

    credits = json.loads(run("credits", email, "--json", "--db-url", cli_db).stdout)
    assert (credits["free_expansions_remaining"], credits["total_expansions_used"]) == (3, 2)
    shown_output = json.loads(run("outputs", "show", data["output"]["id"], "--json", "--db-url", cli_db).stdout)
    assert shown_output["content"]["posts"] == data["output"]["content"]["posts"]
    usage = json.loads(run("admin", "usage", email, "--json", "--db-url", cli_db).stdout)
    assert usage["user"]["email"] == email
    assert usage["balance"]["free_expansions_remaining"] == 3
    assert usage["payments"] == []
    assert [o["format"] for o in usage["last_outputs"]] == ["twitter_thread", "blog_post"]


def test_a_fallback_run_is_shown_as_such_and_never_published(cli_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{a_closed_port()}/v1")  # nothing listens
    monkeypatch.setenv("IDEA_EXPANSION_MODEL_MAX_RETRIES", "0")
    monkeypatch.setenv("IDEA_EXPANSION_MODEL_TIMEOUT", "5")
    email = new_user(cli_db)
    add_idea(cli_db, email, "Falls back")
    shown = ok("expand", "-u", email, "-f", "blog_post", "-p", "openai,offline", "--public", "--db-url", cli_db)
    print(f"\nexpand of a fallback run printed:\n{shown}")
    assert "partial run" in shown
    assert "⚠ fallback to offline templates — not charged" in shown
    assert "offline after model errors" in shown  # the judge, answered offline: recorded, not the fallback
    assert "fallback: not charged" in shown  # the draft: the content is the templates'
    assert "credits left: 5 free, 0 paid" in shown
    [(output_id, is_public)] = query(
        cli_db,
        "select o.id, p.is_public from public.outputs o join public.blog_posts p on p.output_id = o.id "
        "where o.user_id = %s",
        user_id(cli_db, email),
    )
    assert is_public is False  # --public or not: a fallback post stays private
    refused = run("outputs", "publish", str(output_id), "--db-url", cli_db)
    assert refused.exit_code == 1
    assert "was not charged" in refused.output
    assert query(cli_db, "select is_public from public.blog_posts where output_id = %s", output_id) == [(False,)]
    # An image run that fell back keeps its title card inside the output (never uploaded): shown as such,
    # not as tens of kilobytes of base64.
    add_idea(cli_db, email, "A poster that falls back")
    image = ok("expand", "-u", email, "-f", "image", "-p", "openai,offline", "--db-url", cli_db)
    assert "kept in the output, not uploaded (the run was not charged)" in image
    assert "base64" not in image


# -- outputs publish, enqueue, worker --provider ------------------------------------------------------------
def test_outputs_publish_makes_a_post_public_and_pushes_a_repository(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, encryption_key: str
) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    email = new_user(cli_db)
    owner = user_id(cli_db, email)
    add_idea(cli_db, email, "A private post")
    post = json.loads(run("expand", "-u", email, "-f", "blog_post", "--json", "--db-url", cli_db).stdout)
    assert post["blog_post"]["is_public"] is False
    published = ok("outputs", "publish", post["output"]["id"], "--db-url", cli_db)
    assert "public: A private post" in published
    assert query(cli_db, "select is_public from public.blog_posts where id = %s", post["blog_post"]["id"]) == [(True,)]

    add_idea(cli_db, email, "A thread")
    thread = json.loads(run("expand", "-u", email, "-f", "twitter_thread", "--json", "--db-url", cli_db).stdout)
    nothing = run("outputs", "publish", thread["output"]["id"], "--db-url", cli_db)
    assert nothing.exit_code == 1
    assert "a thread is not posted anywhere" in nothing.output

    # A repository generated before the user stored a GitHub token: published once they have.
    add_idea(cli_db, email, "Explain regular expressions")
    repo = json.loads(run("expand", "-u", email, "-f", "github_repo", "--json", "--db-url", cli_db).stdout)
    assert repo["output"]["published"] is False
    no_token = run("outputs", "publish", repo["output"]["id"], "--db-url", cli_db)
    assert no_token.exit_code == 1
    token = f"ghp_{uuid.uuid4().hex}"
    ok("credentials", "set-github", "-u", email, "--db-url", cli_db, input=token)
    with respx.mock(assert_all_called=False) as api:
        routes = mock_github(api)
        pushed = ok("outputs", "publish", repo["output"]["id"], "--db-url", cli_db)
        assert "published at https://github.com/octocat/" in pushed
        assert routes["create"].call_count == 1
        assert routes["create"].calls.last.request.headers["Authorization"] == f"Bearer {token}"
        assert json.loads(routes["create"].calls.last.request.content)["private"] is True  # run was not --public
        again = ok("outputs", "publish", repo["output"]["id"], "--db-url", cli_db)
        assert "was already published at https://github.com/octocat/" in again
        assert routes["create"].call_count == 1
    [(is_published, url)] = query(
        cli_db, "select published, publication_url from public.outputs where id = %s", repo["output"]["id"]
    )
    assert is_published
    assert url.startswith("https://github.com/octocat/")
    charges = query(cli_db, "select status from public.credit_charges where user_id = %s", owner)
    assert charges == [("captured",)] * 3  # publishing charged nothing more


def test_enqueue_then_a_worker_with_provider_runs_it(own_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_db = own_database  # the worker drains every queued run: none of other tests' may be in its way
    email = new_user(cli_db)
    add_idea(cli_db, email, "Queued idea")
    queued = ok("enqueue", "-u", email, "-f", "twitter_thread", "--db-url", cli_db)
    found = re.search(rf"Queued run ({UUID_RE}) for {re.escape(email)}", queued)
    assert found is not None, queued
    add_idea(cli_db, email, "Queued as JSON")
    result = run("enqueue", "-u", str(user_id(cli_db, email)), "--json", "--db-url", cli_db)
    assert result.exit_code == 0, result.output
    execution = json.loads(result.stdout)
    assert execution["status"] == "queued"
    ids = {found.group(1), execution["id"]}
    assert {str(i) for (i,) in query(cli_db, "select id from public.executions where status = 'queued'")} == ids

    # The environment names a provider this machine has no key for; --provider overrides it.
    monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "anthropic")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    refused = run("worker", "--exit-when-idle", "--db-url", cli_db)
    assert refused.exit_code == 1
    assert "ANTHROPIC_API_KEY" in refused.output
    worked = ok("worker", "--exit-when-idle", "--provider", "offline", "--db-url", cli_db)
    assert "provider offline" in worked
    assert "worker stopped after 2 run(s)" in worked
    done = query(cli_db, "select id::text, status from public.executions where id = any(%s::uuid[])", list(ids))
    assert sorted(status for _, status in done) == ["completed", "completed"]


# -- log lines ---------------------------------------------------------------------------------------------
def stale_run(url: str) -> uuid.UUID:
    """A running run whose worker stopped beating two hours ago: the next worker reaps it (a warning)."""
    email = new_user(url)
    add_idea(url, email, "Left behind")
    [(execution,)] = query(
        url,
        "select (public.start_expansion(%s, null, null, null, false) -> 'execution' ->> 'id')::uuid",
        user_id(url, email),
    )
    query(
        url,
        "update public.executions set heartbeat_at = now() - interval '2 hours' where id = %s returning id",
        execution,
    )
    return execution  # type: ignore[no-any-return]


def test_worker_log_lines_are_timestamped_and_written_once(own_database: str) -> None:
    cli_db = own_database  # every line the worker logs is this test's: no other test's runs to reap or run
    for _ in range(3):  # commands run before in the same process leave no handler behind
        ok("credits", new_user(cli_db), "--db-url", cli_db)
    execution = stale_run(cli_db)
    result = run("worker", "--exit-when-idle", "--stale-after", "60", "--db-url", cli_db)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if TIMESTAMPED.match(line)]
    print(f"\nworker log line: {lines}")
    assert len(lines) == 1, result.stderr  # once: not through two handlers
    assert TIMESTAMPED.match(lines[0]), lines
    assert f"WARNING idea_expansion.pipeline: reaped 1 stale execution(s): {execution}" in lines[0]
    assert str(execution) not in result.stdout  # log lines are stderr's; stdout is the command's
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_StderrHandler"]

    execution = stale_run(cli_db)
    as_json = run("--log-json", "worker", "--exit-when-idle", "--stale-after", "60", "--db-url", cli_db)
    entries = [json.loads(line) for line in as_json.stderr.splitlines() if line.startswith("{")]
    assert [(e["level"], e["logger"]) for e in entries] == [("WARNING", "idea_expansion.pipeline")], as_json.stderr
    assert entries[0]["message"] == f"reaped 1 stale execution(s): {execution}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entries[0]["ts"])

    execution = stale_run(cli_db)
    quiet = run("--log-level", "error", "worker", "--exit-when-idle", "--stale-after", "60", "--db-url", cli_db)
    assert quiet.exit_code == 0
    assert str(execution) not in quiet.output  # reaped, silently at this level
    assert query(cli_db, "select status from public.executions where id = %s", execution) == [("failed",)]


def test_a_failed_run_is_logged_once_without_repeating_itself(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_db = own_database  # the worker takes this test's run only
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{a_closed_port()}/v1")  # nothing listens
    monkeypatch.setenv("IDEA_EXPANSION_MODEL_MAX_RETRIES", "0")
    email = new_user(cli_db)
    add_idea(cli_db, email, "Fails at the judge")
    execution = json.loads(run("enqueue", "-u", email, "--json", "--db-url", cli_db).stdout)["id"]
    result = run("worker", "--exit-when-idle", "--provider", "openai", "--db-url", cli_db)
    assert result.exit_code == 0, result.output
    assert "worker stopped after 1 run(s)" in result.stdout
    lines = [line for line in result.stderr.splitlines() if execution in line]
    assert len(lines) == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if TIMESTAMPED.match(line)] == lines
    assert lines[0].count(execution) == 1, lines[0]
    assert lines[0].count("failed at judge") == 1, lines[0]


def test_log_formats_escape_user_text_and_carry_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from idea_expansion.cli._logging import configure_logging

    log = logging.getLogger("idea_expansion.pipeline")
    execution = uuid.uuid4()
    for as_json in (False, True):
        configure_logging("info", as_json=True)  # configured again: replaced, never added twice
        undo = configure_logging("info", as_json=as_json)
        log.info("title %s", "evil\x1b[31m\nFAKE line", extra={"execution_id": execution})
        log.debug("not at info")
        undo()
        err = capsys.readouterr().err.splitlines()
        mine = [line for line in err if "title" in line]
        assert len(mine) == 1, err
        if as_json:
            entry = json.loads(mine[0])
            assert set(entry) == {"ts", "level", "logger", "message", "execution_id"}
            assert (entry["level"], entry["message"], entry["execution_id"]) == (
                "INFO",
                "title evil\x1b[31m\nFAKE line",
                str(execution),
            )
            assert "\x1b" not in mine[0]
        else:
            assert TIMESTAMPED.match(mine[0])
            assert mine[0].endswith("INFO idea_expansion.pipeline: title evil\\x1b[31m\\nFAKE line")
        assert not any("not at info" in line for line in err)


# -- round 2: commands that call no model need no model key; errors named precisely --------------------------
def test_enqueue_and_publish_need_no_model_key(
    cli_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, encryption_key: str
) -> None:
    email = new_user(cli_db)
    add_idea(cli_db, email, "A post with a cover")
    post = json.loads(run("expand", "-u", email, "-f", "blog_post", "--json", "--db-url", cli_db).stdout)
    cover = post["output"]["content"]["cover_image"]["storage_path"]

    # The settings name models this machine has no key for: queueing and publishing call no model.
    monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai,anthropic")
    monkeypatch.setenv("IDEA_EXPANSION_IMAGE_MODE", "model")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    add_idea(cli_db, email, "Queued without a key")
    assert re.search(rf"Queued run {UUID_RE}", ok("enqueue", "-u", email, "-f", "twitter_thread", "--db-url", cli_db))
    published = ok("outputs", "publish", post["output"]["id"], "--db-url", cli_db)
    assert "public: A post with a cover" in published

    # A lost cover is drawn again as it was made (a title card): still no image model, so still no key.
    settings = Settings(_env_file=None, ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]
    storage = tmp_path / "storage"
    with IdeaExpansion(settings=settings, backend="postgres", database_url=cli_db, storage_dir=storage) as sdk:
        assert sdk.storage.remove(cover) == [cover]
        ok("outputs", "publish", post["output"]["id"], "--db-url", cli_db)
        assert sdk.storage.download(cover).startswith(b"\x89PNG")


def test_only_the_no_pending_idea_error_reads_as_nothing_pending(cli_db: str) -> None:
    email = new_user(cli_db)
    add_idea(cli_db, email, "Pending, but no usage row")
    query(cli_db, "delete from public.usage_tracking where user_id = %s returning user_id", user_id(cli_db, email))
    for command in ("expand", "enqueue"):
        result = run(command, "-u", email, "--db-url", cli_db)
        assert result.exit_code == 1, result.output
        assert "no pending idea" not in result.output  # another PT404: said as the database says it
        assert "No usage record for user" in result.output


def test_the_record_says_why_a_cost_is_unknown(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from idea_expansion.cli._render import show_record
    from idea_expansion.pipeline.pricing import PriceTable
    from idea_expansion.types import Execution

    email = new_user(cli_db)
    add_idea(cli_db, email, "A run to describe")
    data = json.loads(run("expand", "-u", email, "-f", "twitter_thread", "--json", "--db-url", cli_db).stdout)
    call = {"stage": "judge", "task": "judge", "provider": "openai", "model": "gpt-4o-mini"}
    execution = Execution.model_validate({**data["execution"], "model_calls": [call], "cost_usd": None})
    capsys.readouterr()
    show_record(execution, prices=None)
    assert "cost unknown (no price table)" in capsys.readouterr().out
    other = PriceTable.from_mapping({"claude-haiku-4-5": {"input_per_million": 1, "output_per_million": 5}})
    show_record(execution, prices=other)
    assert "cost unknown (no price for gpt-4o-mini)" in capsys.readouterr().out


def test_publish_finds_a_renamed_post_among_more_than_a_thousand(cli_db: str) -> None:
    email = new_user(cli_db)
    add_idea(cli_db, email, "One post among many")
    post = json.loads(run("expand", "-u", email, "-f", "blog_post", "--json", "--db-url", cli_db).stdout)["blog_post"]
    query(cli_db, "update public.blog_posts set slug = 'renamed-since' where id = %s returning id", post["id"])
    query(  # newer posts of the same owner (written by hand, without a run): more than one page of them
        cli_db,
        "insert into public.blog_posts (user_id, title, slug, markdown_content, html_content, is_public, created_at) "
        "select %s, 'Filler ' || n, 'filler-' || n, 'x', '<p>x</p>', false, now() + n * interval '1 second' "
        "from generate_series(1, 1001) as n returning id",
        user_id(cli_db, email),
    )
    published = ok("outputs", "publish", post["output_id"], "--db-url", cli_db)
    assert "public: One post among many (/renamed-since)" in published
    assert query(cli_db, "select is_public from public.blog_posts where id = %s", post["id"]) == [(True,)]
