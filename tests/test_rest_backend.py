"""The REST backend against recorded PostgREST / Storage shapes (respx): exact requests out, real error
bodies in, mapped to the same exceptions as the Postgres backend. PostgREST and Storage cannot run here;
the opt-in suite in test_supabase_e2e.py runs the same calls against `supabase start`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
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
    IdeaExpansion,
    IdeaStatus,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    Settings,
    StorageError,
    __version__,
    generate_key,
)

URL = "https://proj.supabase.co"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
USER = uuid.UUID("6e8c61d4-e913-42f4-adb5-e85d2dbe176a")
NOW = "2026-11-26T04:48:54.460630+00:00"
IDEA_ROW = {
    "id": "90324ede-a175-4795-9814-4ab8c2cdeb22",
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


def settings(**overrides: str) -> Settings:
    values = {
        "SUPABASE_URL": URL,
        "SUPABASE_SERVICE_ROLE_KEY": "service-role-key",
        "SUPABASE_ANON_KEY": "anon-key",
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "ENCRYPTION_KEY": generate_key(),
        **overrides,
    }
    return Settings(_env_file=None, **{k: v for k, v in values.items() if v})  # type: ignore[arg-type]


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=True) as router:
        yield router


@pytest.fixture
def client() -> Iterator[IdeaExpansion]:
    with IdeaExpansion(settings=settings(), httpx_client=httpx.Client(timeout=5)) as sdk:
        yield sdk


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


def postgrest_error(status: int, code: str, message: str, details: str | None = None, hint: str | None = None):  # type: ignore[no-untyped-def]
    return httpx.Response(status, json={"code": code, "details": details, "hint": hint, "message": message})


# -- requests out -----------------------------------------------------------------------------------
def test_service_select_sends_service_key_filters_order_and_limit(api: respx.MockRouter, client: IdeaExpansion) -> None:
    route = api.get("/rest/v1/ideas").mock(return_value=httpx.Response(200, json=[IDEA_ROW]))
    ideas = client.ideas.list(status="pending", order_by="priority_score", limit=5, user_id=USER)
    assert [i.status for i in ideas.data] == [IdeaStatus.PENDING]
    assert ideas.next_cursor is None  # one row came back where six were asked: the last page
    request = route.calls.last.request
    assert query(request) == {
        "select": ["*"],
        "user_id": [f"eq.{USER}"],
        "status": ["eq.pending"],
        "order": ["priority_score.desc,id.desc"],  # the id breaks ties, so the keyset order is total
        "limit": ["6"],  # one row more than the page tells whether another page exists
    }
    assert request.headers["apikey"] == "service-role-key"
    assert request.headers["authorization"] == "Bearer service-role-key"
    assert request.headers["x-client-info"] == f"idea-expansion/{__version__}"


def test_user_client_sends_anon_key_and_a_short_lived_user_jwt(api: respx.MockRouter, client: IdeaExpansion) -> None:
    route = api.get("/rest/v1/ideas").mock(return_value=httpx.Response(200, json=[]))
    assert client.for_user(USER).ideas.list().data == []
    request = route.calls.last.request
    assert request.headers["apikey"] == "anon-key"
    token = request.headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert (claims["sub"], claims["role"], claims["aud"]) == (str(USER), "authenticated", "authenticated")
    assert 0 < claims["exp"] - time.time() <= 300
    assert "user_id" not in query(request)  # RLS filters, not the client


def test_access_token_is_passed_through(api: respx.MockRouter, client: IdeaExpansion) -> None:
    token = jwt.encode(  # verified first (the project's JWT secret), then sent as it is
        {"sub": str(USER), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60}, JWT_SECRET
    )
    route = api.get("/rest/v1/ideas").mock(return_value=httpx.Response(200, json=[]))
    client.for_access_token(token).ideas.list()
    assert route.calls.last.request.headers["authorization"] == f"Bearer {token}"


def test_anonymous_client_sends_only_the_anon_key(api: respx.MockRouter, client: IdeaExpansion) -> None:
    route = api.get("/rest/v1/blog_posts").mock(return_value=httpx.Response(200, json=[]))
    client.anonymous().blog_posts.list_public(limit=3)
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer anon-key"
    assert query(request)["is_public"] == ["eq.true"]


def test_insert_returns_representation(api: respx.MockRouter, client: IdeaExpansion) -> None:
    route = api.post("/rest/v1/ideas").mock(return_value=httpx.Response(201, json=[IDEA_ROW]))
    idea = client.for_user(USER).ideas.create(title=" Hello ", bullets=["a"])
    request = route.calls.last.request
    assert request.headers["prefer"] == "return=representation"
    assert json.loads(request.content) == [
        {"user_id": str(USER), "title": "Hello", "description": None, "bullets": ["a"], "external_links": []}
    ]
    assert idea.title == "Hello"


def test_credential_upsert_sends_only_ciphertext(api: respx.MockRouter, client: IdeaExpansion) -> None:
    stored_row: dict[str, object] = {}

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)[0]
        stored_row.update(body)
        return httpx.Response(201, json=[body | {"id": str(uuid.uuid4()), "created_at": NOW, "updated_at": NOW}])

    route = api.post("/rest/v1/credentials").mock(side_effect=respond)
    client.for_user(USER).credentials.set("github", "gho_plaintext")
    request = route.calls.last.request
    assert request.headers["prefer"] == "return=representation,resolution=merge-duplicates"
    assert query(request)["on_conflict"] == ["user_id,provider"]
    assert "gho_plaintext" not in request.content.decode()
    assert json.loads(str(stored_row["encrypted_value"]))["v"] == 2


def test_update_and_delete_filter_by_id(api: respx.MockRouter, client: IdeaExpansion) -> None:
    patch = api.patch("/rest/v1/ideas").mock(return_value=httpx.Response(200, json=[IDEA_ROW]))
    delete = api.delete("/rest/v1/ideas").mock(return_value=httpx.Response(200, json=[]))
    client.ideas.update(IDEA_ROW["id"], title="New")
    assert query(patch.calls.last.request)["id"] == [f"eq.{IDEA_ROW['id']}"]
    assert json.loads(patch.calls.last.request.content) == {"title": "New"}
    with pytest.raises(NotFoundError):
        client.ideas.delete(IDEA_ROW["id"])
    assert query(delete.calls.last.request)["id"] == [f"eq.{IDEA_ROW['id']}"]


def test_cursor_paging_bounds_by_the_sort_column_and_breaks_ties_with_a_quoted_or(
    api: respx.MockRouter, client: IdeaExpansion
) -> None:
    older = IDEA_ROW | {"id": "10324ede-a175-4795-9814-4ab8c2cdeb22"}  # same created_at: a tie, broken by id
    route = api.get("/rest/v1/ideas").mock(
        side_effect=[httpx.Response(200, json=[IDEA_ROW, older]), httpx.Response(200, json=[])]
    )
    first = client.for_user(USER).ideas.list(limit=1)
    assert ([str(i.id) for i in first.data], first.has_next_page()) == ([IDEA_ROW["id"]], True)
    assert "or" not in query(route.calls[0].request)
    second = client.for_user(USER).ideas.list(limit=1, cursor=first.next_cursor)
    assert (second.data, second.next_cursor) == ([], None)
    assert query(route.calls.last.request) == {
        "select": ["*"],
        # `created_at <= v` is the index scan's start; the `or` keeps, of the rows tied at v, those after
        # the cursor's id (values quoted: a timestamp's `:` and `+` stay literal in a logic tree)
        "created_at": [f"lte.{NOW}"],
        "or": [f'(created_at.lt."{NOW}",id.lt."{IDEA_ROW["id"]}")'],
        "order": ["created_at.desc,id.desc"],
        "limit": ["2"],
    }


def test_rpc_consume_posts_named_arguments(api: respx.MockRouter, client: IdeaExpansion) -> None:
    key = uuid.uuid4()
    route = api.post("/rest/v1/rpc/consume_expansion_credit").mock(return_value=httpx.Response(200, json="paid"))
    assert client.credits.consume(USER, idempotency_key=key) == CreditType.PAID
    assert json.loads(route.calls.last.request.content) == {"p_user_id": str(USER), "p_idempotency_key": str(key)}


def test_grant_looks_up_the_email_then_calls_add_paid_credits(api: respx.MockRouter, client: IdeaExpansion) -> None:
    receipt_id = str(uuid.uuid4())
    api.get("/rest/v1/users").mock(return_value=httpx.Response(200, json=[{"id": str(USER)}]))
    rpc = api.post("/rest/v1/rpc/add_paid_credits").mock(return_value=httpx.Response(200, json=receipt_id))
    # PostgREST renders numeric(10,2) as a bare JSON number with its scale: 5.00
    body = (
        f'[{{"id":"{receipt_id}","user_id":"{USER}","amount_usd":5.00,"credits_purchased":5,'
        f'"bmc_reference":"BMC-1","notes":null,"verified_by":"admin","status":"verified",'
        f'"created_at":"{NOW}","verified_at":"{NOW}"}}]'
    )
    api.get("/rest/v1/payment_receipts").mock(
        return_value=httpx.Response(200, content=body, headers={"content-type": "application/json"})
    )
    receipt = client.credits.grant("Ada@Example.com", 5, "5.00", "BMC-1")
    assert str(receipt.amount_usd) == "5.00"
    assert json.loads(rpc.calls.last.request.content) == {
        "p_user_id": str(USER),
        "p_credits": 5,
        "p_amount_usd": "5.00",
        "p_bmc_reference": "BMC-1",
        "p_verified_by": "admin",
        "p_notes": None,
    }


# -- errors in ---------------------------------------------------------------------------------------
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
    api: respx.MockRouter, client: IdeaExpansion, response: httpx.Response, error: type[Exception], code: str
) -> None:
    api.post("/rest/v1/rpc/consume_expansion_credit").mock(return_value=response)
    with pytest.raises(error) as raised:
        client.credits.consume(USER)
    assert raised.value.code == code  # type: ignore[attr-defined]
    assert raised.value.raw == response.json()  # type: ignore[attr-defined]


def test_insufficient_credits_keeps_details_and_hint(api: respx.MockRouter, client: IdeaExpansion) -> None:
    api.post("/rest/v1/rpc/consume_expansion_credit").mock(
        return_value=postgrest_error(402, "PT402", "No credits remaining", "user has 0 free and 0 paid", "Buy more")
    )
    with pytest.raises(InsufficientCreditsError) as raised:
        client.credits.consume(USER)
    assert (raised.value.message, raised.value.details, raised.value.hint) == (
        "No credits remaining",
        "user has 0 free and 0 paid",
        "Buy more",
    )


def test_rls_refusal_on_insert(api: respx.MockRouter, client: IdeaExpansion) -> None:
    api.post("/rest/v1/ideas").mock(
        return_value=postgrest_error(403, "42501", 'new row violates row-level security policy for table "ideas"')
    )
    with pytest.raises(PermissionDeniedError, match="row-level security"):
        client.for_user(USER).ideas.create(title="x", user_id=uuid.uuid4())


def test_writes_are_never_retried_but_reads_are(
    api: respx.MockRouter, client: IdeaExpansion, monkeypatch: pytest.MonkeyPatch
) -> None:
    import postgrest._sync.request_builder as builder

    monkeypatch.setattr(builder.time, "sleep", lambda _: None)
    unavailable = postgrest_error(503, "PGRST002", "Could not query the database for the schema cache. Retrying.")
    rpc = api.post("/rest/v1/rpc/consume_expansion_credit").mock(return_value=unavailable)
    with pytest.raises(Exception, match="schema cache"):
        client.credits.consume(USER)
    assert rpc.call_count == 1
    read = api.get("/rest/v1/ideas").mock(side_effect=[unavailable, httpx.Response(200, json=[])])
    assert client.ideas.list().data == []
    assert read.call_count == 2


@pytest.mark.parametrize(
    ("failure", "error"),
    [(httpx.ConnectTimeout("timed out"), APITimeoutError), (httpx.ConnectError("refused"), APIConnectionError)],
)
def test_transport_failures(
    api: respx.MockRouter, client: IdeaExpansion, failure: Exception, error: type[Exception]
) -> None:
    api.post("/rest/v1/rpc/check_user_has_credits").mock(side_effect=failure)
    with pytest.raises(error) as raised:
        client.credits.check(USER)
    assert type(raised.value) is error  # a refused connection is not reported as a timeout


def test_user_clients_need_the_anon_key_and_jwt_secret(api: respx.MockRouter) -> None:
    api.get("/rest/v1/ideas").mock(return_value=httpx.Response(200, json=[]))
    with (
        IdeaExpansion(settings=settings(SUPABASE_ANON_KEY=""), httpx_client=httpx.Client()) as sdk,
        pytest.raises(ConfigurationError, match="SUPABASE_ANON_KEY"),
    ):
        sdk.for_user(USER).ideas.list()
    with IdeaExpansion(settings=settings(SUPABASE_JWT_SECRET=""), httpx_client=httpx.Client()) as sdk:
        with pytest.raises(ConfigurationError, match="SUPABASE_JWT_SECRET"):
            sdk.for_user(USER).ideas.list()
        sdk.ideas.list()  # the service client still works


# -- storage -----------------------------------------------------------------------------------------
PATH = f"{USER}/run/card.png"


def test_storage_requests(api: respx.MockRouter, client: IdeaExpansion) -> None:
    upload = api.post(f"/storage/v1/object/images/{PATH}").mock(
        return_value=httpx.Response(200, json={"Key": f"images/{PATH}", "Id": str(uuid.uuid4())})
    )
    api.get(f"/storage/v1/object/images/{PATH}").mock(return_value=httpx.Response(200, content=b"\x89PNG"))
    remove = api.delete("/storage/v1/object/images").mock(
        return_value=httpx.Response(200, json=[{"name": PATH, "bucket_id": "images"}])
    )
    sign = api.post(f"/storage/v1/object/sign/images/{PATH}").mock(
        return_value=httpx.Response(200, json={"signedURL": f"/object/sign/images/{PATH}?token=t"})
    )
    me = client.for_user(USER)
    assert me.storage.upload(PATH, b"\x89PNG", upsert=True) == PATH
    request = upload.calls.last.request
    assert request.headers["x-upsert"] == "true"
    assert request.headers["apikey"] == "anon-key"
    assert b"Content-Type: image/png" in request.content
    assert me.storage.download(PATH) == b"\x89PNG"
    assert me.storage.remove(PATH) == [PATH]
    assert json.loads(remove.calls.last.request.content) == {"prefixes": [PATH]}
    assert me.storage.signed_url(PATH, expires_in=60) == f"{URL}/storage/v1/object/sign/images/{PATH}?token=t"
    assert json.loads(sign.calls.last.request.content) == {"expiresIn": "60"}
    assert me.storage.public_url(PATH) == f"{URL}/storage/v1/object/public/images/{PATH}"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {"statusCode": "403", "error": "Unauthorized", "message": "new row violates row-level security policy"},
            PermissionDeniedError,
        ),
        (400, {"statusCode": "404", "error": "not_found", "message": "Object not found"}, NotFoundError),
        (400, {"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"}, ConflictError),
        (
            400,
            {
                "statusCode": "413",
                "error": "Payload too large",
                "message": "The object exceeded the maximum allowed size",
            },
            InvalidRequestError,
        ),
        (500, {"statusCode": "500", "error": "internal", "message": "Internal Server Error"}, StorageError),
    ],
    ids=["rls", "missing", "duplicate", "too-large", "server"],
)
def test_storage_errors(
    api: respx.MockRouter, client: IdeaExpansion, status: int, body: dict[str, str], error: type[Exception]
) -> None:
    api.post(f"/storage/v1/object/images/{PATH}").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(error, match=body["message"]):
        client.for_user(USER).storage.upload(PATH, b"x")
