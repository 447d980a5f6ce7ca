"""Publishing to GitHub against its documented REST responses (respx): one commit with every file,
the owner from GitHub's answer, a bounded retry on a taken name, and refusals that make the run
partial (never a fake URL) and can be retried later without another charge."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import respx

from idea_expansion import ExecutionStatus, IdeaExpansion, ValidationStatus
from idea_expansion.pipeline import GitHubPublisher, OfflineProvider, Pipeline, PublishError
from idea_expansion.pipeline.content import GitHubRepoContent, RepoFile

API = "https://api.github.com"
PARENT = "aa218f56b14c9653891f9e74264a383fa43fefbd"
BASE_TREE = "9fb037999f264ba9a7fc6274d15fa3ae2ab98312"
TREE = "cd8274d15fa3ae2ab983129fb037999f264ba9a7"
COMMIT = "7638417db6d59f3c431d3e1f261cc637155684cd"
NAME_TAKEN = {
    "message": "Repository creation failed.",
    "errors": [
        {"resource": "Repository", "code": "custom", "field": "name", "message": "name already exists on this account"}
    ],
    "documentation_url": "https://docs.github.com/rest/repos/repos#create-a-repository-for-the-authenticated-user",
    "status": "422",
}


def repo_created(name: str) -> dict[str, object]:
    return {
        "id": 1296269,
        "name": name,
        "full_name": f"octocat/{name}",
        "owner": {"login": "octocat", "id": 1, "type": "User"},
        "private": False,
        "html_url": f"https://github.com/octocat/{name}",
        "clone_url": f"https://github.com/octocat/{name}.git",
        "default_branch": "main",
    }


def mock_github(api: respx.MockRouter, *, create: list[httpx.Response] | None = None) -> dict[str, respx.Route]:
    name = "explain-regular-expressions"
    routes = {
        "create": api.post(f"{API}/user/repos").mock(
            side_effect=create or [httpx.Response(201, json=repo_created(name))]
        ),
        "ref": api.get(url__regex=rf"{API}/repos/octocat/[^/]+/git/ref/heads/main").mock(
            return_value=httpx.Response(
                200, json={"ref": "refs/heads/main", "object": {"sha": PARENT, "type": "commit"}}
            )
        ),
        "commit": api.get(url__regex=rf"{API}/repos/octocat/[^/]+/git/commits/{PARENT}").mock(
            return_value=httpx.Response(200, json={"sha": PARENT, "tree": {"sha": BASE_TREE}})
        ),
        "tree": api.post(url__regex=rf"{API}/repos/octocat/[^/]+/git/trees").mock(
            return_value=httpx.Response(201, json={"sha": TREE, "truncated": False, "tree": []})
        ),
        "new_commit": api.post(url__regex=rf"{API}/repos/octocat/[^/]+/git/commits").mock(
            return_value=httpx.Response(201, json={"sha": COMMIT})
        ),
        "update_ref": api.patch(url__regex=rf"{API}/repos/octocat/[^/]+/git/refs/heads/main").mock(
            return_value=httpx.Response(200, json={"ref": "refs/heads/main", "object": {"sha": COMMIT}})
        ),
        "topics": api.put(url__regex=rf"{API}/repos/octocat/[^/]+/topics").mock(
            return_value=httpx.Response(200, json={"names": ["ai-generated", "python"]})
        ),
    }
    return routes


REPO = GitHubRepoContent(
    repo_name="explain-regular-expressions",
    description="Read a regex in words.",
    files=[RepoFile(path="README.md", content="# Explain"), RepoFile(path="src/main.py", content="print('hi')\n")],
    topics=["ai-generated", "python"],
    run_instructions="python src/main.py",
    generated_by="test",
)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_publish_creates_the_repo_and_commits_every_file_at_once(api: respx.MockRouter) -> None:
    routes = mock_github(api)
    result = GitHubPublisher("gho_token", backoff_seconds=0).publish(REPO)
    assert (result.url, result.owner, result.commit_sha, result.files) == (
        "https://github.com/octocat/explain-regular-expressions",
        "octocat",
        COMMIT,
        2,
    )
    create = routes["create"].calls.last.request
    assert create.headers["authorization"] == "Bearer gho_token"
    assert create.headers["x-github-api-version"] == "2022-11-28"
    assert json.loads(create.content) == {
        "name": "explain-regular-expressions",
        "description": "Read a regex in words.",
        "private": False,
        "auto_init": True,
    }
    tree = json.loads(routes["tree"].calls.last.request.content)
    assert tree["base_tree"] == BASE_TREE
    assert [(t["path"], t["content"], t["mode"]) for t in tree["tree"]] == [
        ("README.md", "# Explain", "100644"),
        ("src/main.py", "print('hi')\n", "100644"),
    ]
    assert json.loads(routes["new_commit"].calls.last.request.content)["parents"] == [PARENT]
    assert json.loads(routes["update_ref"].calls.last.request.content) == {"sha": COMMIT}
    assert json.loads(routes["topics"].calls.last.request.content) == {"names": ["ai-generated", "python"]}
    assert routes["new_commit"].call_count == 1  # one commit, not one per file


def test_a_taken_name_is_retried_with_a_suffix_a_bounded_number_of_times(api: respx.MockRouter) -> None:
    routes = mock_github(
        api,
        create=[
            httpx.Response(422, json=NAME_TAKEN),
            httpx.Response(201, json=repo_created("explain-regular-expressions-2")),
        ],
    )
    assert GitHubPublisher("t", backoff_seconds=0).publish(REPO).repo_name == "explain-regular-expressions-2"
    names = [json.loads(c.request.content)["name"] for c in routes["create"].calls]
    assert names == ["explain-regular-expressions", "explain-regular-expressions-2"]

    api.post(f"{API}/user/repos").mock(return_value=httpx.Response(422, json=NAME_TAKEN))
    with pytest.raises(PublishError, match="already exists") as failed:
        GitHubPublisher("t", backoff_seconds=0, name_attempts=3).publish(REPO)
    assert failed.value.status == 422


@pytest.mark.parametrize(
    ("status", "body", "fragment"),
    [
        (
            401,
            {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"},
            "sign in with GitHub again",
        ),
        (403, {"message": "API rate limit exceeded for user ID 1.", "status": "403"}, "rate limit"),
        (
            422,
            {
                "message": "Validation Failed",
                "errors": [{"resource": "Repository", "code": "invalid", "field": "description"}],
                "status": "422",
            },
            "Validation Failed",
        ),
    ],
)
def test_refusals_raise_with_the_status(
    api: respx.MockRouter, status: int, body: dict[str, object], fragment: str
) -> None:
    route = api.post(f"{API}/user/repos").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(PublishError, match=fragment) as failed:
        GitHubPublisher("t", backoff_seconds=0).publish(REPO)
    assert failed.value.status == status
    assert route.call_count == 1


def test_creating_is_never_retried_but_later_calls_are_with_a_bound(api: respx.MockRouter) -> None:
    route = api.post(f"{API}/user/repos").mock(return_value=httpx.Response(502, json={"message": "Bad Gateway"}))
    with pytest.raises(PublishError, match="502"):
        GitHubPublisher("t", backoff_seconds=0, max_retries=2).publish(REPO)
    assert route.call_count == 1  # the repository may exist: a retry would create a second one

    routes = mock_github(api)
    flaky = httpx.Response(502, json={"message": "Bad Gateway"})
    routes["ref"].mock(side_effect=[flaky, flaky, httpx.Response(200, json={"object": {"sha": PARENT}})])
    assert GitHubPublisher("t", backoff_seconds=0, max_retries=2).publish(REPO).commit_sha == COMMIT
    assert routes["ref"].call_count == 3
    routes["ref"].mock(return_value=flaky)
    routes["create"].mock(return_value=httpx.Response(201, json=repo_created("explain-regular-expressions")))
    with pytest.raises(PublishError, match="502"):
        GitHubPublisher("t", backoff_seconds=0, max_retries=2).publish(REPO)


def test_topics_failing_does_not_unpublish(api: respx.MockRouter) -> None:
    routes = mock_github(api)
    routes["topics"].mock(return_value=httpx.Response(422, json={"message": "Invalid topics"}))
    result = GitHubPublisher("t", backoff_seconds=0).publish(REPO)
    assert result.url == "https://github.com/octocat/explain-regular-expressions"
    assert "Invalid topics" in result.metadata()["topics_error"]


def test_unexpected_bodies_are_publish_errors(api: respx.MockRouter) -> None:
    api.post(f"{API}/user/repos").mock(return_value=httpx.Response(201, text="<html>proxy</html>"))
    with pytest.raises(PublishError, match="not JSON"):
        GitHubPublisher("t", backoff_seconds=0).publish(REPO)
    api.post(f"{API}/user/repos").mock(return_value=httpx.Response(500, json=["not", "an", "object"]))
    with pytest.raises(PublishError, match="500"):
        GitHubPublisher("t", backoff_seconds=0).publish(REPO)


def test_pipeline_publishes_with_the_users_token_and_retries_later_without_charging(
    client: IdeaExpansion, api: respx.MockRouter
) -> None:
    pipeline = Pipeline(client, provider=OfflineProvider())
    user = client.users.sign_in_with_github(
        email=f"octo-{uuid.uuid4().hex[:8]}@example.test",
        login="octocat",
        name="Octo Display Name",
        access_token="gho_live",
    )
    idea = client.ideas.create(user_id=user.id, title="Explain regular expressions", bullets=["cli"]).id
    routes = mock_github(api)

    result = pipeline.expand(user.id, idea_id=idea, format="github_repo")
    output = result.outputs[0]
    assert result.status == ExecutionStatus.COMPLETED
    assert (output.published, output.publication_url) == (
        True,
        "https://github.com/octocat/explain-regular-expressions",
    )
    assert output.publication_metadata["owner"] == "octocat"  # from GitHub, not the display name
    assert output.published_at is not None
    assert routes["create"].calls.last.request.headers["authorization"] == "Bearer gho_live"

    # the token stops working: the run is partial, the credential marked invalid, nothing faked
    api.post(f"{API}/user/repos").mock(return_value=httpx.Response(401, json={"message": "Bad credentials"}))
    second_idea = client.ideas.create(user_id=user.id, title="Parse dates well", bullets=["library"]).id
    partial = pipeline.expand(user.id, idea_id=second_idea, format="github_repo")
    assert partial.status == ExecutionStatus.PARTIAL
    assert partial.execution.error_step == "publish"
    assert "401" in (partial.execution.error_message or "")
    assert partial.outputs[0].published is False
    assert partial.outputs[0].publication_url is None
    assert client.credentials.list(user_id=user.id)[0].validation_status == ValidationStatus.INVALID
    charged = client.credits.balance(user.id).total_expansions_used

    # a fresh sign-in stores a new token; publishing again costs nothing
    client.users.sign_in_with_github(email=user.email, login="octocat", access_token="gho_fresh")
    mock_github(api, create=[httpx.Response(201, json=repo_created("parse-dates-well"))])
    published = pipeline.publish(partial.outputs[0].id)
    assert (published.published, published.publication_url) == (True, "https://github.com/octocat/parse-dates-well")
    assert client.credits.balance(user.id).total_expansions_used == charged == 2
