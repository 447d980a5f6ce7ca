"""Supabase Storage beside direct Postgres (issue 12): rows go to the database through DATABASE_URL, files
through the Storage API of SUPABASE_URL, on a database that identifies as a Supabase project's own.

The database is real (the test server, reset through the migrations, its auth schema commented the way a
Supabase project's is, as in test_sdk_postgres.py); the Storage API cannot run here, so its answers are
the recorded shapes (respx), and the requests storage3 sends are checked as the API documents them:
POST /storage/v1/object/<bucket>/<path> (multipart, x-upsert) answered {"Key", "Id"}; GET
/storage/v1/object/<bucket>/<path>; DELETE /storage/v1/object/<bucket> {"prefixes"}; POST
/storage/v1/object/sign/<bucket>/<path> {"expiresIn"} answered {"signedURL"}; errors as
{"statusCode", "error", "message"}."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import respx

from idea_expansion import (
    ConfigurationError,
    ExecutionStatus,
    IdeaExpansion,
    NotFoundError,
    OutputFormat,
    PermissionDeniedError,
    Settings,
)
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion.pipeline import BlogPostContent, ImageContent, Pipeline

from .conftest import migrated_database

URL = "https://proj.supabase.co"
SERVICE_KEY = "service-role-key"
ANON_KEY = "anon-key"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def supabase_database(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    """A migrated database that identifies as a Supabase project's own (`database_kind() == "supabase"`)."""
    url = migrated_database(fresh_database, project, prefix="ie_sbstore", seed=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("comment on schema auth is 'Supabase Auth'")  # what a real project's auth schema looks like
    return url


def settings_for(database_url: str, encryption_key: str, **supabase: str) -> Settings:
    values = {"DATABASE_URL": database_url, "ENCRYPTION_KEY": encryption_key, **supabase}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


WITH_STORAGE = {
    "SUPABASE_URL": URL,
    "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
    "SUPABASE_ANON_KEY": ANON_KEY,
    "SUPABASE_JWT_SECRET": JWT_SECRET,
}


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """The Storage API's recorded answers; any request no route expects fails the test."""
    with respx.mock(base_url=URL, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def sdk(supabase_database: str, encryption_key: str, tmp_path: Path) -> Iterator[IdeaExpansion]:
    """A service client on the Supabase database: Postgres backend, with SUPABASE_URL and the keys."""
    settings = settings_for(supabase_database, encryption_key, **WITH_STORAGE)
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path / "storage") as client:
        yield client


def new_user(client: IdeaExpansion) -> uuid.UUID:
    return client.users.create(email=f"sbstore-{uuid.uuid4().hex[:10]}@example.test").id


def stored_objects(client: IdeaExpansion) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.backend.query(  # type: ignore[attr-defined]
        "select name from storage.objects", None, client.scope
    )
    return rows


def upload_route(api: respx.MockRouter) -> respx.Route:
    """POST /storage/v1/object/images/<path>, answered as the Storage API does: {"Key", "Id"}."""

    def answer(request: httpx.Request) -> httpx.Response:
        key = request.url.path.removeprefix("/storage/v1/object/")
        return httpx.Response(200, json={"Key": key, "Id": str(uuid.uuid4())})

    return api.post(path__regex=r"^/storage/v1/object/images/.+$").mock(side_effect=answer)


def multipart_part(request: httpx.Request) -> tuple[str, bytes]:
    """The content type and the bytes of the multipart `file` part storage3 sends."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    for part in request.content.split(b"--" + boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            (part_type,) = re.findall(rb"Content-Type: ([^\r\n]+)", head)
            return part_type.decode(), body.removesuffix(b"\r\n")
    raise AssertionError("no file part in the upload")


# -- the requests ----------------------------------------------------------------------------------------
def test_service_requests_go_to_the_storage_api_with_the_service_key(
    api: respx.MockRouter, sdk: IdeaExpansion, tmp_path: Path
) -> None:
    user = new_user(sdk)
    path = f"{user}/run/card.png"
    upload = upload_route(api)
    download = api.get(f"/storage/v1/object/images/{path}").mock(return_value=httpx.Response(200, content=PNG))
    remove = api.delete("/storage/v1/object/images").mock(
        return_value=httpx.Response(200, json=[{"name": path, "bucket_id": "images"}])
    )
    sign = api.post(f"/storage/v1/object/sign/images/{path}").mock(
        return_value=httpx.Response(200, json={"signedURL": f"/object/sign/images/{path}?token=t"})
    )

    assert sdk.storage.available is True
    assert sdk.storage.upload(path, PNG, upsert=True) == path
    sent = upload.calls.last.request
    assert (sent.method, sent.url.path) == ("POST", f"/storage/v1/object/images/{path}")
    assert sent.headers["apikey"] == SERVICE_KEY
    assert sent.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert sent.headers["x-upsert"] == "true"
    assert multipart_part(sent) == ("image/png", PNG)
    assert b'name="cacheControl"' in sent.content

    sdk.storage.upload(path, PNG)  # no upsert: Storage refuses an existing object itself
    assert upload.calls.last.request.headers["x-upsert"] == "false"

    assert sdk.storage.download(path) == PNG
    assert download.calls.last.request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert sdk.storage.remove(path) == [path]
    assert json.loads(remove.calls.last.request.content) == {"prefixes": [path]}
    assert sdk.storage.signed_url(path, expires_in=60) == f"{URL}/storage/v1/object/sign/images/{path}?token=t"
    assert json.loads(sign.calls.last.request.content) == {"expiresIn": "60"}
    assert sdk.storage.public_url(path) == f"{URL}/storage/v1/object/public/images/{path}"

    # Storage writes its own rows: nothing in this database's storage.objects, nothing in the folder.
    assert stored_objects(sdk) == []
    assert not (tmp_path / "storage").exists()


def test_a_user_sends_the_anon_key_and_a_token_that_names_them(api: respx.MockRouter, sdk: IdeaExpansion) -> None:
    user = new_user(sdk)
    path = f"{user}/mine.png"
    upload = upload_route(api)

    sdk.for_user(user).storage.upload(path, PNG)
    sent = upload.calls.last.request
    assert sent.headers["apikey"] == ANON_KEY
    scheme, _, token = sent.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert (claims["sub"], claims["role"]) == (str(user), "authenticated")

    # A view made from an access token forwards that token itself (Storage verifies it again).
    now = int(time.time())
    access = {"sub": str(user), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 60}
    access_token = jwt.encode(access, JWT_SECRET, algorithm="HS256")
    sdk.for_access_token(access_token).storage.upload(path, PNG, upsert=True)
    assert upload.calls.last.request.headers["authorization"] == f"Bearer {access_token}"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"statusCode": "404", "error": "not_found", "message": "Object not found"}, NotFoundError),
        (404, {"statusCode": "404", "error": "not_found", "message": "Object not found"}, NotFoundError),
        (
            400,
            {"statusCode": "403", "error": "Unauthorized", "message": "new row violates row-level security policy"},
            PermissionDeniedError,
        ),
        (403, {"statusCode": "403", "error": "Unauthorized", "message": "Forbidden"}, PermissionDeniedError),
    ],
    ids=["missing-400", "missing-404", "rls", "forbidden"],
)
def test_storage_errors_are_the_sdks_typed_errors(
    api: respx.MockRouter, sdk: IdeaExpansion, status: int, body: dict[str, str], error: type[Exception]
) -> None:
    user = new_user(sdk)
    path = f"{user}/x.png"
    api.get(f"/storage/v1/object/images/{path}").mock(return_value=httpx.Response(status, json=body))
    api.post(f"/storage/v1/object/images/{path}").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(error, match=body["message"]):
        sdk.for_user(user).storage.download(path)
    with pytest.raises(error, match=body["message"]):
        sdk.for_user(user).storage.upload(path, PNG)


def test_the_async_client_stores_through_its_twin(
    api: respx.MockRouter, supabase_database: str, encryption_key: str, tmp_path: Path
) -> None:
    upload = upload_route(api)
    settings = settings_for(supabase_database, encryption_key, **WITH_STORAGE)

    async def run() -> tuple[bool, str, str]:
        async with AsyncIdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client:
            user = (await client.users.create(email=f"sbstore-{uuid.uuid4().hex[:10]}@example.test")).id
            path = f"{user}/async.png"
            stored = await client.storage.upload(path, PNG, upsert=True)
            return (
                await asyncio.to_thread(lambda: client.storage.available),
                stored,
                await client.storage.public_url(path),
            )

    available, stored, url = asyncio.run(run())
    assert available is True
    assert upload.calls.last.request.url.path == f"/storage/v1/object/images/{stored}"
    assert url == f"{URL}/storage/v1/object/public/images/{stored}"


# -- without the Storage API, and elsewhere ---------------------------------------------------------------
def test_without_supabase_url_files_are_refused_and_storage_is_not_available(
    supabase_database: str, encryption_key: str, tmp_path: Path
) -> None:
    settings = settings_for(supabase_database, encryption_key)
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client:
        assert client.storage.available is False
        user = new_user(client)
        with pytest.raises(ConfigurationError) as refused:
            client.for_user(user).storage.upload(f"{user}/x.png", PNG)
        message = str(refused.value)
        for setting in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL", "Supabase Storage"):
            assert setting in message
    assert not any(tmp_path.iterdir())

    # The URL alone, without the service key, is not enough either.
    partial = settings_for(supabase_database, encryption_key, SUPABASE_URL=URL)
    with IdeaExpansion(settings=partial, backend="postgres", storage_dir=tmp_path) as client:
        assert client.storage.available is False

    async def available() -> bool:
        async with AsyncIdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client:
            return await asyncio.to_thread(lambda: client.storage.available)

    assert asyncio.run(available()) is False


def test_a_database_that_is_not_supabases_keeps_its_files_local_even_with_supabase_url(
    api: respx.MockRouter, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    """Another project's Storage cannot hold this database's files: no request reaches SUPABASE_URL."""
    settings = settings_for(database_url, encryption_key, **WITH_STORAGE)
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client:
        assert client.storage.available is True
        user = new_user(client)
        path = f"{user}/local.png"
        client.for_user(user).storage.upload(path, PNG)
        assert (tmp_path / "images" / path).read_bytes() == PNG
        assert client.storage.public_url(path).startswith("file://")
    assert not api.calls


def test_the_storage_stack_is_loaded_only_for_a_file_request(supabase_database: str, tmp_path: Path) -> None:
    """Rows and public URLs need no supabase-py, storage3 or httpx: a client that stores no file never
    imports them (the import cost tests/test_install.py and benchmarks/import_time.py watch)."""
    probe = """
import sys, uuid
from idea_expansion import IdeaExpansion
with IdeaExpansion.from_env(backend="postgres") as client:
    user = client.users.create(email=f"lazy-{uuid.uuid4().hex[:8]}@example.test")
    assert client.storage.available
    url = client.storage.public_url(f"{user.id}/a.png")
    assert url.startswith("https://proj.supabase.co/storage/v1/object/public/images/"), url
    loaded = sorted(m for m in ("supabase", "storage3", "httpx", "postgrest") if m in sys.modules)
print(",".join(loaded) or "none")
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "NEXT_PUBLIC_", "IDEA_EXPANSION_"))}
    env = clean | {
        "DATABASE_URL": supabase_database,
        "SUPABASE_URL": URL,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "IDEA_EXPANSION_STORAGE_DIR": str(tmp_path),
    }
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "none"


# -- acceptance: a real pipeline run -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "name"), [(OutputFormat.BLOG_POST, "cover.png"), (OutputFormat.IMAGE, "image.png")], ids=["blog", "image"]
)
def test_a_pipeline_run_stores_its_image_in_supabase_storage(
    api: respx.MockRouter, sdk: IdeaExpansion, fmt: OutputFormat, name: str, tmp_path: Path
) -> None:
    upload = upload_route(api)
    user = new_user(sdk)
    idea = sdk.ideas.create(user_id=user, title="Explain regular expressions", bullets=["works offline"]).id
    before = sdk.credits.balance(user)

    with Pipeline(sdk) as pipeline:
        result = pipeline.expand(user, idea_id=idea, format=fmt)

    execution = result.execution
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    assert (execution.error_step, execution.error_message) == (None, None)
    after = sdk.credits.balance(user)
    assert after.free_expansions_remaining == before.free_expansions_remaining - 1
    assert after.total_expansions_used == before.total_expansions_used + 1
    assert [c.status for c in sdk.credits.charges(user)] == ["captured"]
    assert execution.charged is True

    path = f"{user}/{execution.id}/{name}"
    (call,) = upload.calls
    sent = call.request
    assert (sent.method, sent.url.path) == ("POST", f"/storage/v1/object/images/{path}")
    assert sent.headers["apikey"] == SERVICE_KEY
    assert sent.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert sent.headers["x-upsert"] == "true"
    part_type, data = multipart_part(sent)
    assert part_type == "image/png"
    assert data.startswith(PNG)

    content = result.content()
    stored = content.cover_image if isinstance(content, BlogPostContent) else None
    if isinstance(content, ImageContent):
        stored = content.image
    assert stored is not None
    assert (stored.storage_path, stored.mime_type) == (path, "image/png")
    assert stored.url == f"{URL}/storage/v1/object/public/images/{path}"
    assert stored_objects(sdk) == []  # the rows are Storage's, in its own database
    assert not (tmp_path / "storage").exists()


def test_without_supabase_url_image_runs_are_refused_before_a_credit_and_posts_go_without_covers(
    supabase_database: str, encryption_key: str, tmp_path: Path
) -> None:
    settings = settings_for(supabase_database, encryption_key)
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as client:
        user = new_user(client)
        idea = client.ideas.create(user_id=user, title="Explain regular expressions").id
        before = client.credits.balance(user)
        with Pipeline(client) as pipeline:
            for refused in (pipeline.expand, pipeline.enqueue):
                with pytest.raises(ConfigurationError, match="storage"):
                    refused(user, idea_id=idea, format=OutputFormat.IMAGE)
            assert client.credits.balance(user) == before
            assert list(client.credits.charges(user)) == []
            assert list(client.executions.list(user_id=user)) == []

            result = pipeline.expand(user, idea_id=idea, format=OutputFormat.BLOG_POST)
        assert result.execution.status == ExecutionStatus.COMPLETED, result.execution.error_message
        content = result.content()
        assert isinstance(content, BlogPostContent)
        assert content.cover_image is None
    assert not any(tmp_path.iterdir())


def test_worker_processes_refuse_an_injected_http_client_for_supabase_storage(
    supabase_database: str, encryption_key: str, tmp_path: Path
) -> None:
    """A worker process rebuilds its client from settings: an HTTP client passed in for Supabase Storage
    (a proxy, certificates, a test's transport) would be silently replaced there, so it is refused."""
    from idea_expansion.pipeline._processes import client_recipe

    settings = settings_for(supabase_database, encryption_key, **WITH_STORAGE)
    with (
        httpx.Client() as http,
        IdeaExpansion(settings=settings, backend="postgres", httpx_client=http, storage_dir=tmp_path) as injected,
    ):
        assert injected.storage_backend.injected_http_client  # type: ignore[attr-defined]
        with pytest.raises(ConfigurationError, match=r"HTTP client.*threads_per_process"):
            client_recipe(injected)
        with pytest.raises(ConfigurationError, match="HTTP client"):
            Pipeline(injected).run_worker(concurrency=2, exit_when_idle=True)
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as built:
        assert not built.storage_backend.injected_http_client  # type: ignore[attr-defined]
        assert client_recipe(built).backend == "postgres"
    # Without Supabase Storage the HTTP client is never used: nothing to rebuild, nothing refused.
    with (
        httpx.Client() as http,
        IdeaExpansion(
            settings=settings_for(supabase_database, encryption_key),
            backend="postgres",
            httpx_client=http,
            storage_dir=tmp_path,
        ) as unused,
    ):
        assert client_recipe(unused).backend == "postgres"
