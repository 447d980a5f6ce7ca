"""The SDK's resources on the direct-Postgres backend, against the real database: every method, and
one user never seeing or changing another's rows."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from idea_expansion import (
    ConflictError,
    CreditType,
    DecryptionError,
    IdeaExpansion,
    IdeaStatus,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    OutputFormat,
    PermissionDeniedError,
    Provider,
    ValidationStatus,
)
from idea_expansion.types.content import BlogPostContent, BlogSection
from idea_expansion.types.expansions import Evaluation, ExpansionOutcome

from ._clients import CLIENT_KINDS, client_of_kind


@pytest.fixture(params=CLIENT_KINDS)
def client(request: pytest.FixtureRequest, client: IdeaExpansion) -> IdeaExpansion:
    """The service client, sync or async: every test of this module runs on both (tests/_clients.py)."""
    chosen: IdeaExpansion = client_of_kind(request, client)
    return chosen


def email() -> str:
    return f"sdk-{uuid.uuid4().hex[:10]}@example.test"


@pytest.fixture
def alice(client: IdeaExpansion) -> IdeaExpansion:
    return client.for_user(client.users.create(email=email(), name="Alice").id)


@pytest.fixture
def bob(client: IdeaExpansion) -> IdeaExpansion:
    return client.for_user(client.users.create(email=email(), name="Bob").id)


def uid(view: IdeaExpansion) -> uuid.UUID:
    assert view.scope.user_id is not None
    return view.scope.user_id


# -- users ------------------------------------------------------------------------------------------
def test_github_sign_in_creates_then_updates_and_stores_the_token_encrypted(client: IdeaExpansion) -> None:
    address = email().replace("sdk", "SDK")
    first = client.users.sign_in_with_github(email=address, login="octocat", access_token="gho_first")
    assert first.email == address.lower()
    assert first.name == "octocat"
    assert client.credits.balance(first.id).free_expansions_remaining == 5

    again = client.users.sign_in_with_github(
        email=address, login="octocat", name="Octo Cat", access_token="gho_second", timezone="Europe/Paris"
    )
    assert again.id == first.id
    assert (again.name, again.timezone) == ("Octo Cat", "Europe/Paris")
    assert client.for_user(first.id).credentials.get_secret("github") == "gho_second"
    (stored,) = client.backend.query(  # type: ignore[attr-defined]
        "select encrypted_value from public.credentials where user_id = %s", (first.id,), client.scope
    )
    assert "gho_second" not in stored["encrypted_value"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"email": "not-an-email"}, "not an e-mail"), ({"timezone": "Mars/Olympus"}, "unknown time zone")],
)
def test_sign_in_rejects_bad_input(client: IdeaExpansion, kwargs: dict[str, str], fragment: str) -> None:
    values = {"email": email(), "login": "l", "access_token": "t", **kwargs}
    with pytest.raises(InvalidRequestError, match=fragment):
        client.users.sign_in_with_github(**values)


def test_users_get_update_delete(client: IdeaExpansion, alice: IdeaExpansion, bob: IdeaExpansion) -> None:
    me = alice.users.me()
    assert alice.users.get_by_email(me.email.upper()).id == me.id
    assert alice.users.update(me.id, name="Alice B", timezone="America/New_York").timezone == "America/New_York"
    with pytest.raises(NotFoundError):
        alice.users.get(uid(bob))
    with pytest.raises(NotFoundError):
        alice.users.update(uid(bob), name="hijacked")
    assert client.users.get(uid(bob)).name == "Bob"
    with pytest.raises(PermissionDeniedError):
        alice.users.delete(me.id)
    with pytest.raises(PermissionDeniedError):
        alice.users.create(email=email())
    client.users.delete(uid(bob))
    with pytest.raises(NotFoundError):
        client.users.get(uid(bob))
    with pytest.raises(NotFoundError):
        client.users.delete(uid(bob))
    with pytest.raises(InvalidRequestError, match="not a UUID"):
        client.users.get("42")


def test_duplicate_email_is_a_conflict(client: IdeaExpansion) -> None:
    address = email()
    client.users.create(email=address)
    with pytest.raises(ConflictError):
        client.users.create(email=address)


# -- ideas ------------------------------------------------------------------------------------------
def test_idea_lifecycle(client: IdeaExpansion, alice: IdeaExpansion) -> None:
    idea = alice.ideas.create(
        title="  Explain regexes  ", description="d", bullets=["one"], external_links=["https://x.test"]
    )
    assert (idea.title, idea.status, idea.bullets, idea.user_id) == (
        "Explain regexes",
        IdeaStatus.PENDING,
        ["one"],
        uid(alice),
    )
    updated = alice.ideas.update(idea.id, title="Explain regexes well", bullets=["one", "two"])
    assert (updated.title, updated.bullets, updated.description) == ("Explain regexes well", ["one", "two"], "d")
    with pytest.raises(PermissionDeniedError, match="only an expansion run"):
        alice.ideas.mark_expanded(idea.id)
    assert client.ideas.mark_expanded(idea.id).status == IdeaStatus.EXPANDED
    assert alice.ideas.archive(idea.id).status == IdeaStatus.ARCHIVED
    with pytest.raises(InvalidRequestError, match="archived -> expanded"):
        alice.ideas.mark_expanded(idea.id)
    alice.ideas.delete(idea.id)
    with pytest.raises(NotFoundError):
        alice.ideas.get(idea.id)
    with pytest.raises(NotFoundError):
        alice.ideas.delete(idea.id)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"title": "   "},
        {"title": "t" * 201},
        {"title": "t", "description": "d" * 10_001},
        {"title": "t", "bullets": ["b"] * 51},
        {"title": "t", "external_links": ["l"] * 21},
    ],
    ids=["blank-title", "long-title", "long-description", "too-many-bullets", "too-many-links"],
)
def test_idea_input_limits(alice: IdeaExpansion, kwargs: dict[str, object]) -> None:
    before = len(list(alice.ideas.list()))
    with pytest.raises(InvalidRequestError, match="invalid IdeaCreate"):
        alice.ideas.create(**kwargs)  # type: ignore[arg-type]
    assert len(list(alice.ideas.list())) == before


def test_listing_filters_orders_and_pages(client: IdeaExpansion, alice: IdeaExpansion) -> None:
    created = [alice.ideas.create(title=f"idea {n}") for n in range(5)]
    client.ideas.archive(created[0].id)
    client.backend.query(  # type: ignore[attr-defined]
        "update public.ideas set priority_score = 90 where id = %s", (created[2].id,), client.scope
    )
    assert [i.id for i in alice.ideas.list()] == [i.id for i in reversed(created)]
    assert {i.id for i in alice.ideas.list(status="archived")} == {created[0].id}
    assert alice.ideas.list(order_by="priority_score").data[0].id == created[2].id
    first = alice.ideas.list(limit=2)
    assert [i.id for i in first.data] == [created[4].id, created[3].id]
    second = alice.ideas.list(limit=2, cursor=first.next_cursor)
    assert [i.id for i in second.data] == [created[2].id, created[1].id]

    seen: list[uuid.UUID] = []
    page = alice.ideas.list(limit=2)
    while True:
        seen.extend(i.id for i in page.data)
        if page.next_cursor is None:
            break
        page = alice.ideas.list(limit=2, cursor=page.next_cursor)
    assert seen == [i.id for i in reversed(created)]

    with pytest.raises(InvalidRequestError, match="status must be one of"):
        alice.ideas.list(status="done")
    with pytest.raises(InvalidRequestError, match="limit"):
        alice.ideas.list(limit=0)
    with pytest.raises(InvalidRequestError, match="invalid cursor"):
        alice.ideas.list(cursor="garbage")


def test_users_never_see_or_change_each_others_ideas(alice: IdeaExpansion, bob: IdeaExpansion) -> None:
    mine = alice.ideas.create(title="mine")
    assert bob.ideas.list().data == []
    # Asking for her rows by name changes nothing: RLS decides what a user client sees.
    assert bob.ideas.list(user_id=uid(alice)).data == []
    assert bob.ideas.list(user_id=uid(alice), status="pending").data == []
    assert [i.id for i in alice.ideas.list(user_id=uid(alice))] == [mine.id]
    with pytest.raises(NotFoundError):
        bob.ideas.get(mine.id)
    with pytest.raises(NotFoundError):
        bob.ideas.update(mine.id, title="stolen")
    with pytest.raises(NotFoundError):
        bob.ideas.archive(mine.id)
    with pytest.raises(NotFoundError):
        bob.ideas.delete(mine.id)
    with pytest.raises(PermissionDeniedError):
        bob.ideas.create(title="planted", user_id=uid(alice))
    assert alice.ideas.get(mine.id).title == "mine"


def test_service_client_needs_a_user_for_owned_rows(client: IdeaExpansion) -> None:
    with pytest.raises(InvalidRequestError, match="user_id is required"):
        client.ideas.create(title="whose?")


# -- credentials --------------------------------------------------------------------------------------
def test_credentials(client: IdeaExpansion, alice: IdeaExpansion, bob: IdeaExpansion) -> None:
    saved = alice.credentials.set(Provider.OPENAI, "sk-alice")
    assert (saved.provider, saved.is_active, saved.validation_status) == (
        Provider.OPENAI,
        True,
        ValidationStatus.NOT_CHECKED,
    )
    assert "sk-alice" not in repr(saved)
    assert alice.credentials.get_secret("openai") == "sk-alice"
    # the verdict is the service's (users cannot set it: tests/test_secrets_backups.py)
    validated = client.credentials.mark_validated("openai", True, user_id=uid(alice))
    assert validated.validation_status == ValidationStatus.VALID
    assert [c.provider for c in alice.credentials.list()] == [Provider.OPENAI]
    alice.credentials.deactivate("openai")
    with pytest.raises(NotFoundError, match="no active openai credential"):
        alice.credentials.get_secret("openai")
    alice.credentials.set("openai", "sk-alice-2")
    assert alice.credentials.get_secret("openai") == "sk-alice-2"

    assert bob.credentials.list() == []
    with pytest.raises(NotFoundError):
        bob.credentials.get_secret("openai", user_id=uid(alice))
    with pytest.raises(NotFoundError):
        bob.credentials.deactivate("openai", user_id=uid(alice))
    with pytest.raises(InvalidRequestError, match="provider must be one of"):
        alice.credentials.set("gitlab", "x")
    assert client.credentials.get_secret("openai", user_id=uid(alice)) == "sk-alice-2"


def test_a_ciphertext_moved_to_another_user_does_not_decrypt(
    client: IdeaExpansion, alice: IdeaExpansion, bob: IdeaExpansion
) -> None:
    alice.credentials.set("anthropic", "sk-ant-alice")
    bob.credentials.set("anthropic", "sk-ant-bob")
    client.backend.query(  # type: ignore[attr-defined]
        "update public.credentials set encrypted_value = "
        "(select encrypted_value from public.credentials where user_id = %s and provider = 'anthropic') "
        "where user_id = %s and provider = 'anthropic'",
        (uid(alice), uid(bob)),
        client.scope,
    )
    with pytest.raises(DecryptionError) as failure:
        bob.credentials.get_secret("anthropic")
    assert "sk-ant" not in str(failure.value)


# -- executions, outputs, blog posts -------------------------------------------------------------------
def blog_content(title: str, slug: str) -> BlogPostContent:
    return BlogPostContent(
        title=title,
        slug=slug,
        sections=[BlogSection(heading="One", paragraphs=["p"]), BlogSection(heading="Two", paragraphs=["q"])],
        markdown=f"# {title}",
        html=f"<h1>{title}</h1>",
        meta_description="m",
        tags=["x"],
        word_count=2,
        reading_time_minutes=1,
        social_post="s",
        generated_by="test",
    )


def test_runs_and_outputs_are_written_by_the_lifecycle_and_read_by_their_owner(
    client: IdeaExpansion, alice: IdeaExpansion, bob: IdeaExpansion
) -> None:
    idea = alice.ideas.create(title="run me")
    started = client.expansions.start(uid(alice), idea_id=idea.id, format="blog_post")
    assert (started.created, started.idea.id if started.idea else None) == (True, idea.id)
    finished = client.expansions.finish(
        started.execution.id,
        ExpansionOutcome(
            status="completed",
            evaluation=Evaluation(score=70, reasoning="good"),
            format_chosen=OutputFormat.BLOG_POST,
            content=blog_content("T", "run-me"),
        ),
    )
    execution, output, post = finished.execution, finished.output, finished.blog_post
    assert output is not None
    assert post is not None
    assert execution.format_chosen == OutputFormat.BLOG_POST
    assert alice.executions.get(execution.id).status == "completed"
    assert alice.expansions.status(execution.id).output_ids == [output.id]
    assert [o.id for o in alice.outputs.list(execution_id=execution.id)] == [output.id]
    assert alice.outputs.get(output.id).content == blog_content("T", "run-me")
    assert bob.executions.list().data == []
    with pytest.raises(NotFoundError):
        bob.outputs.get(output.id)
    with pytest.raises(NotFoundError):
        bob.expansions.status(execution.id)
    # Users cannot drive the lifecycle, and the writers that bypassed it are gone from the SDK.
    with pytest.raises(PermissionDeniedError):
        alice.expansions.start(uid(alice), idea_id=alice.ideas.create(title="mine").id)
    with pytest.raises(PermissionDeniedError):
        alice.expansions.finish(execution.id, ExpansionOutcome(status="failed", error_step="judge", error_message="x"))
    for resource, writer in [
        ("executions", "create"),
        ("executions", "update"),
        ("outputs", "create"),
        ("outputs", "record_publication"),
        ("blog_posts", "create"),
    ]:
        assert not hasattr(getattr(client, resource), writer), f"{resource}.{writer} bypasses the lifecycle"

    # A run's blog post is private until its owner (or the run) says otherwise.
    assert post.is_public is False
    assert post.id not in {p.id for p in bob.blog_posts.list()}
    # "Whose posts": a user's own id is sent as the policies' (select auth.uid()) on the Postgres backend,
    # another user's as a value; either way the rows are the ones RLS lets this user see.
    assert [p.id for p in alice.blog_posts.list(user_id=uid(alice))] == [post.id]
    assert bob.blog_posts.list(user_id=uid(alice)).data == []
    assert bob.blog_posts.list(user_id=uid(bob)).data == []
    assert [e.id for e in alice.executions.list(status="completed")] == [execution.id]
    assert bob.executions.list(status="completed").data == []
    assert [o.id for o in alice.outputs.list(format="blog_post")] == [output.id]
    assert alice.outputs.list(format="image").data == []
    assert post.id not in {p.id for p in client.anonymous().blog_posts.list_public(limit=1000)}
    assert alice.blog_posts.get_by_slug("run-me").id == post.id
    assert alice.blog_posts.get_by_output(output.id).id == post.id
    with pytest.raises(NotFoundError):
        bob.blog_posts.get_by_output(output.id)  # a private post's output id tells another user nothing
    assert alice.blog_posts.update(post.id, title="Retitled", tags=["x"], is_public=True).title == "Retitled"
    with pytest.raises(NotFoundError):
        bob.blog_posts.update(post.id, is_public=False)
    assert post.id in {p.id for p in client.anonymous().blog_posts.list_public(limit=1000)}
    assert post.id in {p.id for p in bob.blog_posts.list()}
    assert [p.id for p in bob.blog_posts.list(user_id=uid(alice))] == [post.id]  # public now
    assert bob.blog_posts.list(user_id=uid(bob)).data == []  # still not one of bob's own
    other = alice.ideas.create(title="run me too")
    second = client.expansions.start(uid(alice), idea_id=other.id, format="blog_post")
    with pytest.raises(ConflictError):
        alice.blog_posts.update(
            client.expansions.finish(
                second.execution.id,
                ExpansionOutcome(status="completed", content=blog_content("T2", "other"), format_chosen="blog_post"),
            ).blog_post.id,  # type: ignore[union-attr]
            slug="run-me",
        )


# -- credits --------------------------------------------------------------------------------------------
def test_credits_through_the_sdk(client: IdeaExpansion, alice: IdeaExpansion) -> None:
    me = uid(alice)
    assert alice.credits.check() is True
    key = uuid.uuid4()
    assert client.credits.consume(me, idempotency_key=key) == CreditType.FREE
    assert client.credits.consume(me, idempotency_key=key) == CreditType.FREE
    for _ in range(4):
        client.credits.consume(me)
    with pytest.raises(InsufficientCreditsError) as refused:
        client.credits.consume(me)
    assert refused.value.code == "PT402"
    balance = alice.credits.balance()
    assert (balance.total_remaining, balance.total_expansions_used) == (0, 5)

    reference = f"SDK-REF-{uuid.uuid4().hex[:8]}"  # a payment reference is granted once per database
    receipt = client.credits.grant(alice.users.me().email, 5, Decimal("5.00"), reference, notes="coffee")
    assert (receipt.credits_purchased, receipt.amount_usd, receipt.notes) == (5, Decimal("5.00"), "coffee")
    assert client.credits.grant(me, 5, "5.00", reference).id == receipt.id
    assert client.credits.consume(me) == CreditType.PAID
    assert [r.id for r in alice.credits.history()] == [receipt.id]
    assert len(list(alice.credits.charges())) == 6


@pytest.mark.parametrize(
    ("credits", "amount", "fragment"),
    [
        (0, "5", "positive integer"),
        (1.5, "5", "positive integer"),
        (5, "5abc", "must be a number"),
        (5, "-1", "positive"),
        (5, "1.001", "two decimal places"),
        (5, 5.0, "not a float"),
    ],
)
def test_grant_validation(
    client: IdeaExpansion, alice: IdeaExpansion, credits: object, amount: object, fragment: str
) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        client.credits.grant(uid(alice), credits, amount)  # type: ignore[arg-type]
    assert alice.credits.balance().paid_credits_remaining == 0


def test_service_only_credit_calls_are_refused_for_users(alice: IdeaExpansion, bob: IdeaExpansion) -> None:
    with pytest.raises(PermissionDeniedError):
        alice.credits.consume(uid(alice))
    with pytest.raises(PermissionDeniedError):
        alice.credits.grant(uid(alice), 5, "5.00")
    with pytest.raises(PermissionDeniedError):
        alice.credits.check(uid(bob))
    with pytest.raises(NotFoundError):
        alice.credits.balance(uid(bob))


def test_grant_to_unknown_email(client: IdeaExpansion) -> None:
    with pytest.raises(NotFoundError, match="user not found"):
        client.credits.grant("nobody@example.test", 5, "5.00")


# -- storage ----------------------------------------------------------------------------------------------
def test_storage_in_own_folder_only(alice: IdeaExpansion, bob: IdeaExpansion) -> None:
    path = f"{uid(alice)}/run/card.png"
    assert alice.storage.upload(path, b"\x89PNG\r\n") == path
    assert alice.storage.download(path) == b"\x89PNG\r\n"
    assert alice.storage.public_url(path).startswith("file://")
    with pytest.raises(ConflictError):
        alice.storage.upload(path, b"again")
    alice.storage.upload(path, b"replaced", upsert=True)
    assert alice.storage.download(path) == b"replaced"
    with pytest.raises(PermissionDeniedError):
        bob.storage.upload(f"{uid(alice)}/planted.png", b"x")
    with pytest.raises(NotFoundError):
        bob.storage.download(path)
    assert bob.storage.remove(path) == []
    assert alice.storage.remove(path) == [path]
    with pytest.raises(NotFoundError):
        alice.storage.download(path)


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs.png", "a//b.png", "a/./b.png", ""])
def test_storage_rejects_bad_paths(alice: IdeaExpansion, path: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid storage path"):
        alice.storage.upload(path, b"x")


def test_storage_enforces_bucket_limits(alice: IdeaExpansion) -> None:
    with pytest.raises(InvalidRequestError, match="not allowed"):
        alice.storage.upload(f"{uid(alice)}/x.txt", b"x", content_type="text/plain")
    with pytest.raises(InvalidRequestError, match="allows 5242880"):
        alice.storage.upload(f"{uid(alice)}/big.png", b"x" * (5 * 1024 * 1024 + 1))


def test_access_tokens_are_verified_on_direct_postgres(database_url: str, encryption_key: str) -> None:
    import time

    import jwt

    from idea_expansion import AuthenticationError, ConfigurationError, Settings

    secret = "a-project-jwt-secret-that-is-long-enough-0123"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=encryption_key, SUPABASE_JWT_SECRET=secret
    )
    with IdeaExpansion(settings=settings, backend="postgres") as sdk:
        user = sdk.users.create(email=email())
        claims = {"sub": str(user.id), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 60}
        assert sdk.for_access_token(jwt.encode(claims, secret)).users.me().id == user.id
        for bad in (
            jwt.encode(claims, "another-secret-that-is-also-long-enough-012"),
            jwt.encode(claims | {"exp": int(time.time()) - 10}, secret),
            jwt.encode(claims | {"role": "service_role"}, secret),
            "not-a-jwt",
        ):
            with pytest.raises(AuthenticationError):
                sdk.for_access_token(bad)
    without_secret = Settings(_env_file=None, DATABASE_URL=database_url)  # type: ignore[call-arg]
    with (
        IdeaExpansion(settings=without_secret, backend="postgres") as sdk,
        pytest.raises(ConfigurationError, match="SUPABASE_JWT_SECRET"),
    ):
        sdk.for_access_token(jwt.encode(claims, secret))


def test_local_storage_refuses_a_supabase_database(fresh_database, project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from idea_expansion import ConfigurationError, Settings
    from idea_expansion.local import reset

    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project, seed=False)
        conn.execute("comment on schema auth is 'Supabase Auth'")  # what a real project's auth schema looks like
    settings = Settings(_env_file=None, DATABASE_URL=url)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=tmp_path) as sdk:
        user = sdk.users.create(email=email())
        with pytest.raises(ConfigurationError, match="Supabase Storage"):
            sdk.storage.upload(f"{user.id}/x.png", b"\x89PNG")
    assert not any(tmp_path.iterdir())
