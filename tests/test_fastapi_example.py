"""The example service (examples/fastapi_app.py) through FastAPI's TestClient, against a migrated database:
an idea created and queued by the holder of an access token, its run followed as Server-Sent Events while
a real worker runs it, and the HTTP errors a caller meets (401, 402, 404)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from packaging.version import Version

from idea_expansion import IdeaExpansion
from idea_expansion.pipeline import OfflineProvider, Pipeline
from idea_expansion.pipeline.providers import Completion, IdeaBrief, Task

from ._db import Db
from .conftest import migrated_database

pytest.importorskip("fastapi", reason="the example service needs FastAPI (in the dev extra: pip install fastapi)")
from examples.fastapi_app import POLL_INTERVAL_SECONDS, app
from fastapi.testclient import TestClient

JWT_SECRET = "an-example-project-jwt-secret-long-enough-0123"
STREAMING_TEST_CLIENT = Version(version("starlette")) >= Version("1.9")
"""Starlette's TestClient hands a streamed body over as it is sent from 1.9 on; before, only once it ends."""


@pytest.fixture(scope="module")
def service_database(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    """A database of this module's own: the worker below takes the oldest queued run of every user."""
    return migrated_database(fresh_database, project, prefix="ie_fastapi", seed=False)


@pytest.fixture
def service_settings(
    service_database: str, encryption_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The service's environment: the database, the project's JWT secret and nothing from the developer's."""
    for name in (
        "SUPABASE_URL",
        "NEXT_PUBLIC_SUPABASE_URL",
        "SUPABASE_JWKS",
        "SUPABASE_JWKS_URL",
        "IDEA_EXPANSION_BACKEND",
        "IDEA_EXPANSION_PROVIDER",
        "ENCRYPTION_KEYS_OLD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", service_database)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    monkeypatch.setenv("IDEA_EXPANSION_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return service_database


@pytest.fixture
def http(service_settings: str) -> Iterator[TestClient]:
    """The example app, its lifespan (one async client, one pipeline) running."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def admin(service_settings: str) -> Iterator[IdeaExpansion]:
    """The service client, for what the example leaves to others: making users, spending credits."""
    with IdeaExpansion(database_url=service_settings) as client:
        yield client


def bearer(user_id: uuid.UUID, *, secret: str = JWT_SECRET, **claims: Any) -> dict[str, str]:
    """The Authorization header of an access token Supabase Auth would issue to `user_id` (HS256)."""
    payload = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(payload | claims, secret, algorithm='HS256')}"}


def new_user(admin: IdeaExpansion) -> uuid.UUID:
    return admin.users.create(email=f"api-{uuid.uuid4().hex[:10]}@example.test").id


T = TypeVar("T")


class HeldProvider:
    """The offline provider, whose first answer waits for `release`: the run stays running (in its first
    model call) until the test has seen it running, so the stream's middle is not left to timing."""

    name = "held-offline"

    def __init__(self) -> None:
        self.release = threading.Event()
        self._offline = OfflineProvider()

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        if not self.release.wait(60):
            raise TimeoutError("the test never saw the run running")
        return self._offline.generate(task, schema, idea=idea, instructions=instructions)


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


def read_events(lines: Iterator[str], *, until: Any, deadline: float) -> Iterator[Event]:
    """The events of a text/event-stream, one at a time; comment lines (keep-alives) are skipped."""
    name, data = "message", ""
    for line in lines:
        if time.monotonic() > deadline:
            raise AssertionError("the stream did not reach a final state in time")
        if line.startswith(":"):
            continue
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
        elif line == "" and data:
            event = Event(name, json.loads(data))
            yield event
            if until(event):
                return
            name, data = "message", ""


# -- the whole flow ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not STREAMING_TEST_CLIENT, reason="Starlette's TestClient streams responses from 1.9 on")
def test_an_idea_is_queued_and_its_run_streamed_to_the_end(
    http: TestClient, admin: IdeaExpansion, service_settings: str
) -> None:
    user = new_user(admin)
    me = bearer(user)

    created = http.post("/ideas", json={"title": "A CLI that explains regexes", "bullets": ["offline"]}, headers=me)
    assert created.status_code == 201, created.text
    idea = created.json()
    assert (idea["user_id"], idea["status"], idea["bullets"]) == (str(user), "pending", ["offline"])

    queued = http.post("/expansions", json={"idea_id": idea["id"], "format": "blog_post"}, headers=me)
    assert queued.status_code == 202, queued.text
    run = queued.json()
    assert (run["status"], run["selected_idea_id"], run["requested_format"]) == ("queued", idea["id"], "blog_post")
    assert admin.credits.balance(user).free_expansions_remaining == 4  # the credit is held at once

    processed: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    provider = HeldProvider()

    def work() -> None:
        try:
            with (
                IdeaExpansion(database_url=service_settings) as client,
                Pipeline(client, provider=provider) as pipeline,
            ):
                processed.append(pipeline.run_worker(max_runs=1, poll_interval=0.05, stop=stop))
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    worker = threading.Thread(target=work, name="example-worker")
    events: list[Event] = []
    release: threading.Timer | None = None
    try:
        with http.stream("GET", f"/expansions/{run['id']}/events", headers=me) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            final = {"completed", "partial", "failed"}
            for event in read_events(
                stream.iter_lines(), until=lambda e: e.data["status"] in final, deadline=time.monotonic() + 120
            ):
                events.append(event)
                if len(events) == 1:
                    worker.start()  # the worker takes the run only once the stream has shown it queued
                if event.data["status"] == "running" and release is None:
                    # Held for a few polls: a stream that repeated an unchanged state would show it here.
                    release = threading.Timer(3 * POLL_INTERVAL_SECONDS, provider.release.set)
                    release.start()
    finally:
        if release is not None:
            release.cancel()
        provider.release.set()
        stop.set()
        if worker.is_alive():
            worker.join(60)
    assert not failures, failures
    assert processed == [1]

    statuses = [e.data["status"] for e in events]
    assert [e.name for e in events] == statuses
    assert statuses[0] == "queued"
    assert "running" in statuses
    assert statuses[-1] == "completed", events[-1].data
    order = ["queued", "running", "completed"]
    assert statuses == sorted(statuses, key=order.index), statuses  # never back to an earlier status
    changes = [(e.data["status"], e.data["stage"]) for e in events]
    assert all(a != b for a, b in pairwise(changes)), changes  # one event per change
    assert {e.data["execution_id"] for e in events} == {run["id"]}
    assert len(events[-1].data["output_ids"]) == 1

    usage = admin.credits.balance(user)
    assert (usage.free_expansions_remaining, usage.total_expansions_used) == (4, 1)
    db = Db(service_settings)
    try:
        charges = db.scalar("select array_agg(status) from public.credit_charges where user_id = %s", (user,))
    finally:
        db.close()
    assert charges == ["captured"]
    # Another user neither sees the run nor follows it.
    assert http.get(f"/expansions/{run['id']}/events", headers=bearer(new_user(admin))).status_code == 404


# -- what a caller can get wrong ------------------------------------------------------------------------------
def forged(user_id: uuid.UUID) -> dict[str, str]:
    return bearer(user_id, secret="not-the-project-secret-but-long-enough-0123")


@pytest.mark.parametrize(
    "headers",
    [
        lambda user: {},
        forged,
        lambda user: bearer(user, exp=int(time.time()) - 10),
        lambda user: bearer(user, role="service_role"),
        lambda user: {"Authorization": "Bearer not-a-jwt"},
    ],
    ids=["no-token", "forged", "expired", "service-role-claim", "not-a-jwt"],
)
def test_a_caller_without_a_valid_token_is_unauthorized(http: TestClient, admin: IdeaExpansion, headers: Any) -> None:
    user = new_user(admin)
    refused = http.post("/ideas", json={"title": "planted"}, headers=headers(user))
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"] == "AuthenticationError"
    assert http.get(f"/expansions/{uuid.uuid4()}/events", headers=headers(user)).status_code == 401
    assert admin.for_user(user).ideas.list().data == []


def test_queueing_without_credits_is_payment_required_and_queues_nothing(
    http: TestClient, admin: IdeaExpansion
) -> None:
    user = new_user(admin)
    for _ in range(5):
        admin.credits.consume(user)
    me = bearer(user)
    idea = http.post("/ideas", json={"title": "One idea too many"}, headers=me).json()

    refused = http.post("/expansions", json={"idea_id": idea["id"]}, headers=me)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"] == "InsufficientCreditsError"
    assert admin.executions.list(user_id=user).data == []


def test_another_users_idea_and_run_are_not_found(http: TestClient, admin: IdeaExpansion) -> None:
    owner, stranger = new_user(admin), new_user(admin)
    idea = http.post("/ideas", json={"title": "Mine"}, headers=bearer(owner)).json()

    refused = http.post("/expansions", json={"idea_id": idea["id"]}, headers=bearer(stranger))
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"] == "NotFoundError"
    assert admin.executions.list(user_id=stranger).data == []
    assert http.get(f"/expansions/{uuid.uuid4()}/events", headers=bearer(owner)).status_code == 404  # no such run


def test_input_the_sdk_refuses_is_unprocessable(http: TestClient, admin: IdeaExpansion) -> None:
    refused = http.post("/ideas", json={"title": "   "}, headers=bearer(new_user(admin)))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "InvalidRequestError"


def test_a_misconfigured_service_answers_500_without_the_details(
    service_settings: str, admin: IdeaExpansion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPABASE_JWT_SECRET")  # tokens cannot be verified: a ConfigurationError
    with TestClient(app, raise_server_exceptions=False) as http:
        failed = http.post("/ideas", json={"title": "t"}, headers=bearer(new_user(admin)))
    assert failed.status_code == 500
    assert failed.json() == {"error": "ConfigurationError", "message": "internal error"}
