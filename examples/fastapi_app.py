"""A small FastAPI service over the async client: create an idea, queue its expansion, follow the run.

    POST /ideas                          create an idea for the caller
    POST /expansions                     queue an expansion of one of the caller's ideas (202, the queued run)
    GET  /expansions/{id}/events         the run's progress as Server-Sent Events, until it is final

The caller is the holder of a Supabase Auth access token (`Authorization: Bearer <token>`): every read
runs as that user, so RLS decides what they see. Queueing runs on the service client for the caller's
user id, because holding a credit is the service's call (the database holds it, or refuses with 402).
Workers run the queued runs: `idea-expansion worker`, in as many processes as needed.

Run it with the settings in the environment (DATABASE_URL, SUPABASE_JWT_SECRET, ENCRYPTION_KEY, ...):

    uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from jwt import decode as read_claims
from pydantic import BaseModel, Field

from idea_expansion import (
    APIConnectionError,
    APITimeoutError,
    AsyncIdeaExpansion,
    AuthenticationError,
    ConflictError,
    Execution,
    ExecutionStatus,
    Idea,
    IdeaExpansionError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    OutputFormat,
    PermissionDeniedError,
    Stage,
)
from idea_expansion.pipeline import AsyncPipeline
from idea_expansion.types.expansions import ExpansionStatus

logger = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 0.5
"""How often a progress stream asks the database where its run is."""

MAX_STREAM_SECONDS = 15 * 60
"""The longest a progress stream stays open; a client that still waits reconnects (with a fresh token)."""

FINAL_STATUSES = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.PARTIAL, ExecutionStatus.FAILED})

# Most specific first: the first class an error is an instance of gives its status.
HTTP_STATUS_BY_ERROR: tuple[tuple[type[IdeaExpansionError], HTTPStatus], ...] = (
    (AuthenticationError, HTTPStatus.UNAUTHORIZED),
    (InsufficientCreditsError, HTTPStatus.PAYMENT_REQUIRED),
    (PermissionDeniedError, HTTPStatus.FORBIDDEN),
    (NotFoundError, HTTPStatus.NOT_FOUND),
    (ConflictError, HTTPStatus.CONFLICT),
    (InvalidRequestError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (APITimeoutError, HTTPStatus.GATEWAY_TIMEOUT),
    (APIConnectionError, HTTPStatus.SERVICE_UNAVAILABLE),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One client (one connection pool) and one pipeline for the whole service, closed at shutdown."""
    async with AsyncIdeaExpansion.from_env() as client, AsyncPipeline(client) as pipeline:
        app.state.client = client
        app.state.pipeline = pipeline
        yield


app = FastAPI(title="idea-expansion example", lifespan=lifespan)
bearer = HTTPBearer(auto_error=False)


@app.exception_handler(IdeaExpansionError)
async def idea_expansion_error(request: Request, exc: IdeaExpansionError) -> JSONResponse:
    """Every SDK error as one JSON shape; anything unexpected is a 500 that does not echo its message."""
    code = next(
        (code for kind, code in HTTP_STATUS_BY_ERROR if isinstance(exc, kind)), HTTPStatus.INTERNAL_SERVER_ERROR
    )
    if code == HTTPStatus.INTERNAL_SERVER_ERROR:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    message = "internal error" if code == HTTPStatus.INTERNAL_SERVER_ERROR else str(exc)
    headers = {"WWW-Authenticate": "Bearer"} if code == HTTPStatus.UNAUTHORIZED else None
    return JSONResponse({"error": type(exc).__name__, "message": message}, status_code=code, headers=headers)


# -- who is calling ---------------------------------------------------------------------------------------------
def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> AsyncIdeaExpansion:
    """The client acting as the bearer of the request's access token.

    A plain `def`: FastAPI runs it in a thread, so verifying a token (which may fetch the project's JWKS
    once, a blocking request) never stalls the event loop."""
    if credentials is None:
        raise AuthenticationError("send a Supabase access token: Authorization: Bearer <token>")
    client: AsyncIdeaExpansion = request.app.state.client
    return client.for_access_token(credentials.credentials)


def service_pipeline(request: Request) -> AsyncPipeline:
    """The service's pipeline, which queues runs on the service client."""
    runs: AsyncPipeline = request.app.state.pipeline
    return runs


Caller = Annotated[AsyncIdeaExpansion, Depends(caller)]
Runs = Annotated[AsyncPipeline, Depends(service_pipeline)]


def user_id_of(me: AsyncIdeaExpansion) -> UUID:
    """The caller's user id (a `for_access_token` client always has one)."""
    if me.scope.user_id is None:
        raise AuthenticationError("this request does not act as a user")
    return me.scope.user_id


# -- the API ----------------------------------------------------------------------------------------------------
class IdeaIn(BaseModel):
    """A new idea (the SDK checks the limits: a title of 1-200 characters, and so on)."""

    title: str
    description: str | None = None
    bullets: list[str] = Field(default_factory=list)
    external_links: list[str] = Field(default_factory=list)


class ExpansionIn(BaseModel):
    """An expansion to queue: which of the caller's ideas, and optionally the format and a retry key."""

    idea_id: UUID
    format: OutputFormat | None = None
    idempotency_key: UUID | None = Field(default=None, description="Queueing again with it returns the same run.")


class Progress(BaseModel):
    """One event of a progress stream: where the run is now."""

    execution_id: UUID
    status: ExecutionStatus
    stage: Stage | None
    output_ids: list[UUID]
    error_step: str | None
    error_message: str | None

    @classmethod
    def of(cls, run: ExpansionStatus) -> Progress:
        return cls(
            execution_id=run.execution_id,
            status=run.status,
            stage=run.current_stage,
            output_ids=run.output_ids,
            error_step=run.error_step,
            error_message=run.error_message,
        )


@app.post("/ideas", status_code=HTTPStatus.CREATED)
async def create_idea(idea: IdeaIn, me: Caller) -> Idea:
    """Create a pending idea for the caller."""
    return await me.ideas.create(
        title=idea.title, description=idea.description, bullets=idea.bullets, external_links=idea.external_links
    )


@app.post("/expansions", status_code=HTTPStatus.ACCEPTED)
async def queue_expansion(expansion: ExpansionIn, me: Caller, runs: Runs) -> Execution:
    """Queue an expansion of one of the caller's ideas; a worker runs it. The credit is held now (402 when
    there is none), and another user's idea is not found for this caller (404)."""
    return await runs.enqueue(
        user_id_of(me),
        idea_id=expansion.idea_id,
        format=expansion.format,
        idempotency_key=expansion.idempotency_key,
    )


async def run_to_follow(execution_id: UUID, me: Caller) -> ExpansionStatus:
    """The run as the caller sees it now. Read before the stream starts, so that a run the caller cannot
    see is a plain 404 rather than a stream that breaks after its headers."""
    return await me.expansions.status(execution_id)


def stream_deadline(me: Caller, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> float:
    """When the caller's progress stream ends (on the `time.monotonic()` clock): when their access token
    expires, or after MAX_STREAM_SECONDS. A run may stay queued for ever (no worker), and a stream polls
    the database as the token's holder: neither may outlive the token, nor pile up without end."""
    if credentials is None:  # `me` refused it already: `caller` verified the token (signature and expiry)
        raise AuthenticationError("send a Supabase access token: Authorization: Bearer <token>")
    expires_at = read_claims(credentials.credentials, options={"verify_signature": False})["exp"]
    return time.monotonic() + min(float(expires_at) - time.time(), MAX_STREAM_SECONDS)


@app.get("/expansions/{execution_id}/events", response_class=EventSourceResponse)
async def expansion_events(
    me: Caller,
    first: Annotated[ExpansionStatus, Depends(run_to_follow)],
    deadline: Annotated[float, Depends(stream_deadline)],
) -> AsyncIterator[ServerSentEvent]:
    """The run's progress as Server-Sent Events: one event (named after the status) each time its status
    or stage changes, the last one final (completed, partial or failed). The stream ends early, without
    a final event, when the caller's token expires (or after MAX_STREAM_SECONDS): reconnect to go on."""
    progress = Progress.of(first)
    yield ServerSentEvent(data=progress, event=progress.status.value)
    while progress.status not in FINAL_STATUSES:
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
        if time.monotonic() >= deadline:
            return
        latest = Progress.of(await me.expansions.status(progress.execution_id))
        if (latest.status, latest.stage) != (progress.status, progress.stage):
            yield ServerSentEvent(data=latest, event=latest.status.value)
        progress = latest
