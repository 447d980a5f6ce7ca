"""End to end against a real Supabase stack (`supabase start`, then `supabase db reset`).

Opt-in: set SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_ANON_KEY and SUPABASE_JWT_SECRET (the
values `supabase status` prints) and ENCRYPTION_KEY. Without them every test here is skipped: PostgREST,
Storage and Auth need Docker, which the CI machines do not have.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from idea_expansion import (
    IdeaExpansion,
    InsufficientCreditsError,
    NotFoundError,
    PermissionDeniedError,
    Settings,
    generate_key,
)

REQUIRED = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "SUPABASE_JWT_SECRET")
missing = [name for name in REQUIRED if not os.environ.get(name)]
pytestmark = [
    pytest.mark.supabase,
    pytest.mark.skipif(
        bool(missing),
        reason=f"needs a running Supabase stack (`supabase start`); set {', '.join(missing)} from `supabase status`",
    ),
]


@pytest.fixture(scope="module")
def client() -> Iterator[IdeaExpansion]:
    os.environ.setdefault("ENCRYPTION_KEY", generate_key())
    with IdeaExpansion(settings=Settings(), backend="rest") as sdk:
        yield sdk


def test_the_same_scenarios_through_the_supabase_api(client: IdeaExpansion) -> None:
    alice = client.users.create(email=f"e2e-{uuid.uuid4().hex[:8]}@example.test")
    bob = client.users.create(email=f"e2e-{uuid.uuid4().hex[:8]}@example.test")
    as_alice, as_bob = client.for_user(alice.id), client.for_user(bob.id)

    idea = as_alice.ideas.create(title="through PostgREST")
    assert [i.id for i in as_alice.ideas.list()] == [idea.id]
    assert list(as_bob.ideas.list()) == []
    with pytest.raises(NotFoundError):
        as_bob.ideas.get(idea.id)
    with pytest.raises(PermissionDeniedError):
        as_bob.ideas.create(title="planted", user_id=alice.id)
    with pytest.raises(PermissionDeniedError):
        as_alice.credits.consume(alice.id)

    as_alice.credentials.set("github", "gho_e2e")
    assert as_alice.credentials.get_secret("github") == "gho_e2e"

    for _ in range(5):
        client.credits.consume(alice.id)
    with pytest.raises(InsufficientCreditsError):
        client.credits.consume(alice.id)
    receipt = client.credits.grant(alice.email, 1, "1.00", f"E2E-{uuid.uuid4().hex[:8]}")
    assert as_alice.credits.history().data[0].id == receipt.id

    path = f"{alice.id}/e2e/card.png"
    as_alice.storage.upload(path, b"\x89PNG\r\n\x1a\n", upsert=True)
    assert as_alice.storage.download(path) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PermissionDeniedError):
        as_bob.storage.upload(f"{alice.id}/e2e/planted.png", b"\x89PNG\r\n\x1a\n")
    assert as_alice.storage.remove(path) == [path]
    client.users.delete(alice.id)
    client.users.delete(bob.id)
