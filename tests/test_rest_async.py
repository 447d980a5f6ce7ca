"""The async REST backend (`AsyncRestBackend`) against recorded PostgREST shapes (respx mocks httpx's async
client too): the same requests out and the same errors in as the sync `RestBackend` (test_rest_backend.py),
through `AsyncIdeaExpansion`. Each test runs its coroutine with `asyncio.run`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import respx

from idea_expansion import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    CreditType,
    IdeaStatus,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RestBackend,
    Settings,
    __version__,
    generate_key,
)
from idea_expansion._async_client import AsyncIdeaExpansion
from idea_expansion.backends._base import Delete, Eq, In, Insert, Is, Json, Keyset, Order, Rpc, Select, Update
from idea_expansion.backends.rest_async import AsyncRestBackend

URL = "https://proj.supabase.co"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
USER = uuid.UUID("6e8c61d4-e913-42f4-adb5-e85d2dbe176a")
IDEA_ID = uuid.UUID("90324ede-a175-4795-9814-4ab8c2cdeb22")
NOW = "2026-11-26T04:48:54.460630+00:00"
IDEA_ROW = {
    "id": str(IDEA_ID),
    "user_id": str(USER),
    "title": "Hello",
    "description": None,
    "bullets": ["a"],
    "external_links": [],
    "status": "pending",
    "priority_score": 0,
    "last_evaluated_at": None,
    "times_evaluated": 0,
    "created_at": NOW,
    "updated_at": NOW,
}
T = TypeVar("T")


def settings(**overrides: str) -> Settings:
    values = {
        "SUPABASE_URL": URL,
        "SUPABASE_SERVICE_ROLE_KEY": "service-role-key",
        "SUPABASE_ANON_KEY": "anon-key",
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "ENCRYPTION_KEY": generate_key(),
        **overrides,
    }
    return Settings(_env_file=None, **{k: v for k, v in values.items() if v})  # type: ignore[call-arg, arg-type]


def run(scenario: Callable[[AsyncIdeaExpansion], Awaitable[T]], **overrides: str) -> T:
    """Run `scenario` on a REST async client (HTTP through an injected httpx.AsyncClient), in a fresh loop."""

    async def main() -> T:
        async with (
            httpx.AsyncClient(timeout=5) as http,
            AsyncIdeaExpansion(settings=settings(**overrides), httpx_client=http) as client,
        ):
            return await scenario(client)

    return asyncio.run(main())


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=True) as router:
        yield router


@pytest.fixture
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """supabase-py waits 1, 2, 4 s between retries of a read; the count matters here, not the wait."""
    import postgrest._async.request_builder as builder

    monkeypatch.setattr(builder, "get_retry_delay", lambda attempt: 0)


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


def postgrest_error(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "details": details, "hint": hint, "message": message})


# -- wiring ------------------------------------------------------------------------------------------
def test_the_async_client_reaches_the_supabase_api_and_its_twin_too() -> None:
    client = AsyncIdeaExpansion(settings=settings())  # built outside any event loop, nothing sent
    assert client.backend_kind == "rest"
    assert isinstance(client.backend, AsyncRestBackend)
    twin = client.sync_context()
    assert twin.backend_kind == "rest"
    assert isinstance(twin.backend, RestBackend)
    assert twin.backend.url == URL
    asyncio.run(client.close())


def test_a_ready_backend_is_used_as_it_is_and_must_name_the_settings_project() -> None:
    backend = AsyncRestBackend(URL + "/", service_role_key="service-role-key")
    client = AsyncIdeaExpansion(settings=settings(), backend=backend)
    assert (client.backend, client.backend_kind) == (backend, "rest")
    asyncio.run(client.close())
    other = AsyncRestBackend("https://other.supabase.co", service_role_key="k")
    with pytest.raises(ConfigurationError, match="SUPABASE_URL"):
        AsyncIdeaExpansion(settings=settings(), backend=other)
    asyncio.run(other.close())


def test_closing_the_client_leaves_an_injected_http_client_open(api: respx.MockRouter) -> None:
    api.get("/rest/v1/ideas").respond(200, json=[])

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            client = AsyncIdeaExpansion(settings=settings(), httpx_client=http)
            await client.close()
            assert not http.is_closed  # the caller's to close
            assert (await http.get(f"{URL}/rest/v1/ideas")).status_code == 200

    asyncio.run(scenario())


# -- requests out -------------------------------------------------------------------------------------
def test_service_select_sends_service_key_filters_order_limit_and_offset(api: respx.MockRouter) -> None:
    route = api.get("/rest/v1/ideas").respond(200, json=[IDEA_ROW])
    other = uuid.uuid4()
    request = Select(
        "ideas",
        [Eq("user_id", USER), In("id", [IDEA_ID, other]), Is("last_evaluated_at", None), Is("archived", False)],
        order=[Order("priority_score", descending=True), Order("id", descending=True)],
        limit=5,
        offset=10,
        columns=["id", "title"],
    )
    rows = run(lambda client: client.backend.execute(request, client.scope))
    assert rows == [IDEA_ROW]
    sent = route.calls.last.request
    assert query(sent) == {
        "select": ["id,title"],
        "user_id": [f"eq.{USER}"],
        "id": [f"in.({IDEA_ID},{other})"],
        "last_evaluated_at": ["is.null"],
        "archived": ["is.false"],
        "order": ["priority_score.desc,id.desc"],
        "limit": ["5"],
        "offset": ["10"],
    }
    assert sent.headers["apikey"] == "service-role-key"
    assert sent.headers["authorization"] == "Bearer service-role-key"
    assert sent.headers["x-client-info"] == f"idea-expansion/{__version__}"


def test_user_client_sends_anon_key_and_a_short_lived_user_jwt(api: respx.MockRouter) -> None:
    route = api.get("/rest/v1/ideas").respond(200, json=[IDEA_ROW])
    idea = run(lambda client: client.for_user(USER).ideas.get(IDEA_ID))
    assert idea.status == IdeaStatus.PENDING
    sent = route.calls.last.request
    assert sent.headers["apikey"] == "anon-key"
    token = sent.headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert (claims["sub"], claims["role"], claims["aud"]) == (str(USER), "authenticated", "authenticated")
    assert 0 < claims["exp"] - time.time() <= 300
    assert query(sent) == {"select": ["*"], "id": [f"eq.{IDEA_ID}"]}  # RLS narrows to the user, not the client


def test_access_token_is_passed_through(api: respx.MockRouter) -> None:
    token = jwt.encode(  # verified first (the project's JWT secret), then sent as it is
        {"sub": str(USER), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60}, JWT_SECRET
    )
    route = api.get("/rest/v1/ideas").respond(200, json=[IDEA_ROW])
    run(lambda client: client.for_access_token(token).ideas.get(IDEA_ID))
    assert route.calls.last.request.headers["authorization"] == f"Bearer {token}"
    assert route.calls.last.request.headers["apikey"] == "anon-key"


def test_anonymous_client_sends_only_the_anon_key(api: respx.MockRouter) -> None:
    route = api.get("/rest/v1/blog_posts").respond(200, json=[])

    async def scenario(client: AsyncIdeaExpansion) -> None:
        page = await client.anonymous().blog_posts.list_public(limit=3)
        assert page.data == []

    run(scenario)
    sent = route.calls.last.request
    assert (sent.headers["apikey"], sent.headers["authorization"]) == ("anon-key", "Bearer anon-key")
    assert query(sent)["is_public"] == ["eq.true"]


def test_cursor_paging_asks_one_more_row_and_sends_a_quoted_keyset_filter(api: respx.MockRouter) -> None:
    second = IDEA_ROW | {"id": str(uuid.uuid4())}
    route = api.get("/rest/v1/ideas").mock(
        side_effect=[httpx.Response(200, json=[IDEA_ROW, second]), httpx.Response(200, json=[second])]
    )

    async def scenario(client: AsyncIdeaExpansion) -> list[str]:
        first = await client.for_user(USER).ideas.list(limit=1)
        assert first.has_next_page()
        following = await first.get_next_page()
        return [str(idea.id) for page in (first, following) for idea in page.data]

    assert run(scenario) == [str(IDEA_ID), second["id"]]
    first_request, next_request = (call.request for call in route.calls)
    assert query(first_request)["limit"] == ["2"]
    assert query(first_request)["order"] == ["created_at.desc,id.desc"]
    assert query(next_request)["created_at"] == [f"lte.{NOW}"]
    assert query(next_request)["or"] == [f'(created_at.lt."{NOW}",id.lt."{IDEA_ID}")']


def test_keyset_values_stay_literal_inside_the_logic_tree(api: respx.MockRouter) -> None:
    route = api.get("/rest/v1/outputs").respond(200, json=[])
    request = Select("outputs", [Keyset("title", 'a,b.c:"d"(e)', IDEA_ID)])
    run(lambda client: client.backend.execute(request, client.scope))
    assert query(route.calls.last.request)["title"] == ['lte.a,b.c:"d"(e)']  # a plain filter takes it as it is
    assert query(route.calls.last.request)["or"] == [f'(title.lt."a,b.c:\\"d\\"(e)",id.lt."{IDEA_ID}")']


def test_insert_returns_representation(api: respx.MockRouter) -> None:
    route = api.post("/rest/v1/ideas").respond(201, json=[IDEA_ROW])
    idea = run(lambda client: client.for_user(USER).ideas.create(title=" Hello ", bullets=["a"]))
    sent = route.calls.last.request
    assert sent.headers["prefer"] == "return=representation"
    assert json.loads(sent.content) == [
        {"user_id": str(USER), "title": "Hello", "description": None, "bullets": ["a"], "external_links": []}
    ]
    assert idea.title == "Hello"


def test_upsert_merges_on_the_conflict_columns_with_values_as_json(api: respx.MockRouter) -> None:
    route = api.post("/rest/v1/payment_receipts").respond(201, json=[{"id": "r"}])
    when = dt.datetime(2026, 11, 26, 4, 48, 54, tzinfo=dt.UTC)
    row = {"user_id": USER, "amount_usd": Decimal("5.00"), "verified_at": when, "notes": Json(["x", 1])}
    request = Insert("payment_receipts", [row], on_conflict=["user_id", "bmc_reference"])
    assert run(lambda client: client.backend.execute(request, client.scope)) == [{"id": "r"}]
    sent = route.calls.last.request
    assert sent.headers["prefer"] == "return=representation,resolution=merge-duplicates"
    assert query(sent)["on_conflict"] == ["user_id,bmc_reference"]
    assert json.loads(sent.content) == [
        {"user_id": str(USER), "amount_usd": "5.00", "verified_at": when.isoformat(), "notes": ["x", 1]}
    ]


def test_update_and_delete_filter_and_return_the_rows(api: respx.MockRouter) -> None:
    patch = api.patch("/rest/v1/ideas").respond(200, json=[IDEA_ROW])
    delete = api.delete("/rest/v1/ideas").respond(200, json=[])

    async def scenario(client: AsyncIdeaExpansion) -> None:
        await client.ideas.update(IDEA_ID, title="New")
        with pytest.raises(NotFoundError):  # no row came back: nothing was deleted
            await client.ideas.delete(IDEA_ID)

    run(scenario)
    for route in (patch, delete):
        assert query(route.calls.last.request)["id"] == [f"eq.{IDEA_ID}"]
        assert route.calls.last.request.headers["prefer"] == "return=representation"
    assert json.loads(patch.calls.last.request.content) == {"title": "New"}


def test_update_and_delete_requests_on_the_backend(api: respx.MockRouter) -> None:
    patch = api.patch("/rest/v1/ideas").respond(200, json=[IDEA_ROW])
    delete = api.delete("/rest/v1/ideas").respond(204)  # PostgREST without a representation: no body

    async def scenario(client: AsyncIdeaExpansion) -> tuple[Any, Any]:
        updated = await client.backend.execute(
            Update("ideas", {"status": "archived"}, [In("id", [IDEA_ID])]), client.scope
        )
        deleted = await client.backend.execute(Delete("ideas", [Eq("status", "archived")]), client.scope)
        return updated, deleted

    assert run(scenario) == ([IDEA_ROW], [])
    assert query(patch.calls.last.request)["id"] == [f"in.({IDEA_ID})"]
    assert query(delete.calls.last.request)["status"] == ["eq.archived"]


def test_rpc_consume_posts_named_arguments(api: respx.MockRouter) -> None:
    key = uuid.uuid4()
    route = api.post("/rest/v1/rpc/consume_expansion_credit").respond(200, json="paid")
    assert run(lambda client: client.credits.consume(USER, idempotency_key=key)) == CreditType.PAID
    sent = route.calls.last.request
    assert json.loads(sent.content) == {"p_user_id": str(USER), "p_idempotency_key": str(key)}
    assert sent.headers["authorization"] == "Bearer service-role-key"


@pytest.mark.parametrize(
    ("returns", "body", "result"),
    [
        ("row", [{"a": 1}], {"a": 1}),
        ("row", [], None),
        ("row", {"a": None, "b": None}, None),  # a null composite: every field null
        ("row", {"a": 1, "b": None}, {"a": 1, "b": None}),
        ("rows", [{"a": 1}, {"a": 2}], [{"a": 1}, {"a": 2}]),
        ("values", [1, 2], [1, 2]),
        ("scalar", 7, 7),
    ],
)
def test_rpc_results_are_shaped_as_on_direct_postgres(
    api: respx.MockRouter, returns: Any, body: Any, result: Any
) -> None:
    api.post("/rest/v1/rpc/some_function").respond(200, json=body)
    request = Rpc("some_function", {"p_id": IDEA_ID}, returns=returns)
    assert run(lambda client: client.backend.rpc(request, client.scope)) == result


def test_a_rest_effect_runs_on_the_sync_twin_and_the_rest_on_the_async_backend(api: respx.MockRouter) -> None:
    auth_id = uuid.uuid4()
    auth_user = {  # GoTrue's answer to POST /auth/v1/admin/users, trimmed to what it always sends
        "id": str(auth_id),
        "aud": "authenticated",
        "role": "authenticated",
        "email": "ada@example.com",
        "email_confirmed_at": NOW,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"name": "Ada"},
        "created_at": NOW,
        "updated_at": NOW,
    }
    admin = api.post("/auth/v1/admin/users").respond(200, json=auth_user)
    profile = {"id": str(auth_id), "email": "ada@example.com", "name": "Ada", "timezone": "UTC"}
    patch = api.patch("/rest/v1/users").respond(200, json=[profile | {"created_at": NOW, "updated_at": NOW}])
    user = run(lambda client: client.users.create(email="ada@example.com", name="Ada"))
    assert user.id == auth_id
    assert admin.calls.last.request.headers["apikey"] == "service-role-key"
    assert query(patch.calls.last.request)["id"] == [f"eq.{auth_id}"]


# -- errors in ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (
            postgrest_error(
                402,
                "PT402",
                "No credits remaining",
                "user_id x has 0 free and 0 paid credits",
                "Purchase more credits; an admin grants them with add_paid_credits.",
            ),
            InsufficientCreditsError,
            "PT402",
        ),
        (
            postgrest_error(403, "42501", "permission denied for function consume_expansion_credit"),
            PermissionDeniedError,
            "42501",
        ),
        (postgrest_error(401, "PGRST301", "JWT expired"), AuthenticationError, "PGRST301"),
        (postgrest_error(404, "PT404", "No usage record for user"), NotFoundError, "PT404"),
        (postgrest_error(409, "23505", "idempotency key already used for another user"), ConflictError, "23505"),
        (postgrest_error(400, "22P02", 'invalid input syntax for type uuid: "x"'), InvalidRequestError, "22P02"),
    ],
    ids=["no-credits", "rls", "jwt-expired", "no-usage-row", "key-conflict", "bad-uuid"],
)
def test_postgrest_errors_map_by_code(
    api: respx.MockRouter, response: httpx.Response, error: type[Exception], code: str
) -> None:
    api.post("/rest/v1/rpc/consume_expansion_credit").mock(return_value=response)
    with pytest.raises(error) as raised:
        run(lambda client: client.credits.consume(USER))
    assert raised.value.code == code  # type: ignore[attr-defined]
    assert raised.value.raw == response.json()  # type: ignore[attr-defined]


def test_insufficient_credits_keeps_message_details_and_hint(api: respx.MockRouter) -> None:
    api.post("/rest/v1/rpc/consume_expansion_credit").mock(
        return_value=postgrest_error(402, "PT402", "No credits remaining", "user has 0 free and 0 paid", "Buy more")
    )
    with pytest.raises(InsufficientCreditsError) as raised:
        run(lambda client: client.credits.consume(USER))
    assert (raised.value.message, raised.value.details, raised.value.hint) == (
        "No credits remaining",
        "user has 0 free and 0 paid",
        "Buy more",
    )


def test_rls_refusal_on_insert(api: respx.MockRouter) -> None:
    api.post("/rest/v1/ideas").mock(
        return_value=postgrest_error(403, "42501", 'new row violates row-level security policy for table "ideas"')
    )
    with pytest.raises(PermissionDeniedError, match="row-level security"):
        run(lambda client: client.for_user(USER).ideas.create(title="x", user_id=uuid.uuid4()))


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.ConnectTimeout("timed out"), APITimeoutError),
        (httpx.ReadTimeout("timed out"), APITimeoutError),
        (httpx.ConnectError("refused"), APIConnectionError),
    ],
)
def test_transport_failures(api: respx.MockRouter, failure: Exception, error: type[Exception]) -> None:
    route = api.post("/rest/v1/rpc/check_user_has_credits").mock(side_effect=failure)
    with pytest.raises(error) as raised:
        run(lambda client: client.credits.check(USER))
    assert type(raised.value) is error  # a refused connection is not reported as a timeout
    assert route.call_count == 1


def test_a_read_that_times_out_is_not_retried(api: respx.MockRouter) -> None:
    route = api.get("/rest/v1/ideas").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(APITimeoutError):
        run(lambda client: client.ideas.get(IDEA_ID))
    assert route.call_count == 1  # it may still be running: supabase-py retries only what surely failed


# -- retries: reads only -----------------------------------------------------------------------------
UNAVAILABLE = postgrest_error(503, "PGRST002", "Could not query the database for the schema cache. Retrying.")


@pytest.mark.usefixtures("no_retry_delay")
@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("POST", "/rest/v1/rpc/consume_expansion_credit", lambda c: c.credits.consume(USER)),
        ("POST", "/rest/v1/ideas", lambda c: c.ideas.create(title="x", user_id=USER)),
        ("PATCH", "/rest/v1/ideas", lambda c: c.ideas.update(IDEA_ID, title="New")),
        ("DELETE", "/rest/v1/ideas", lambda c: c.ideas.delete(IDEA_ID)),
    ],
    ids=["rpc", "insert", "update", "delete"],
)
def test_writes_are_never_retried(
    api: respx.MockRouter, method: str, path: str, call: Callable[[AsyncIdeaExpansion], Awaitable[Any]]
) -> None:
    route = api.route(method=method, path=path).mock(side_effect=[UNAVAILABLE, httpx.Response(200, json=[IDEA_ROW])])
    with pytest.raises(Exception, match="schema cache"):
        run(call)
    assert route.call_count == 1  # the success that a retry would have met is never asked for


@pytest.mark.usefixtures("no_retry_delay")
@pytest.mark.parametrize(
    "first_failure",
    [UNAVAILABLE, httpx.ConnectError("refused")],
    ids=["503", "connection-refused"],
)
def test_reads_are_retried(api: respx.MockRouter, first_failure: httpx.Response | Exception) -> None:
    route = api.get("/rest/v1/ideas").mock(side_effect=[first_failure, httpx.Response(200, json=[IDEA_ROW])])
    idea = run(lambda client: client.ideas.get(IDEA_ID))
    assert idea.id == IDEA_ID
    assert route.call_count == 2
    assert route.calls.last.request.headers["x-retry-count"] == "1"


@pytest.mark.usefixtures("no_retry_delay")
def test_a_read_that_keeps_failing_ends_in_the_mapped_error(api: respx.MockRouter) -> None:
    route = api.get("/rest/v1/ideas").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError):
        run(lambda client: client.ideas.get(IDEA_ID))
    assert route.call_count == 4  # the first try and supabase-py's three retries


# -- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("missing", "scope"),
    [("SUPABASE_ANON_KEY", "user"), ("SUPABASE_ANON_KEY", "anon"), ("SUPABASE_JWT_SECRET", "user")],
)
def test_user_and_anonymous_requests_need_their_keys(missing: str, scope: str) -> None:
    async def scenario(client: AsyncIdeaExpansion) -> Any:
        view = client.for_user(USER) if scope == "user" else client.anonymous()
        return await view.backend.execute(Select("ideas"), view.scope)

    with pytest.raises(ConfigurationError, match=missing):
        run(scenario, **{missing: ""})


def test_service_requests_need_no_anon_key(api: respx.MockRouter) -> None:
    api.get("/rest/v1/ideas").respond(200, json=[IDEA_ROW])
    assert run(lambda client: client.ideas.get(IDEA_ID), SUPABASE_ANON_KEY="", SUPABASE_JWT_SECRET="").id == IDEA_ID
