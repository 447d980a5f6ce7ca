"""Publishing to GitHub against its documented REST responses (respx): one commit with every file,
the owner from GitHub's answer, a bounded retry on a taken name, retries (429/5xx, `Retry-After`,
transport errors) by the client's httpx-retries transport and never for creating the repository, and
refusals that make the run partial (never a fake URL) and can be retried later without another charge.

respx mocks below httpx's `HTTPTransport` (at httpcore), so the `RetryTransport` that
`github_http_client` puts in front of it runs for real in these tests: every retry is a call on a route.
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Iterator

import httpx
import httpx_retries.retry
import pytest
import respx

from idea_expansion import ExecutionStatus, IdeaExpansion, ValidationStatus
from idea_expansion.pipeline import GitHubPublisher, OfflineProvider, Pipeline, PublishError
from idea_expansion.pipeline.content import GitHubRepoContent, RepoFile
from idea_expansion.pipeline.github import REF_READY_RETRY, github_http_client

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
SECONDARY_RATE_LIMIT = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
    "status": "429",
}
NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}
EMPTY_REPO = {
    "message": "Git Repository is empty.",
    "documentation_url": "https://docs.github.com/rest",
    "status": "409",
}
RETRIES = 2  # the bound the `http` fixture's client is built with


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
            side_effect=create, return_value=httpx.Response(201, json=repo_created(name))
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


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits httpx-retries asks for between attempts, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(httpx_retries.retry, "time", types.SimpleNamespace(sleep=asked.append))
    return asked


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with github_http_client(retries=RETRIES, backoff_factor=0) as client:
        yield client


def test_the_default_client_bounds_each_attempt_and_backs_off_exponentially(
    api: respx.MockRouter, sleeps: list[float]
) -> None:
    routes = mock_github(api)
    routes["commit"].mock(return_value=httpx.Response(502, json={"message": "Bad Gateway"}))
    with github_http_client() as client:
        assert client.timeout == httpx.Timeout(30.0, connect=10.0)
        with pytest.raises(PublishError, match="502"):
            GitHubPublisher("t", http_client=client).publish(REPO)
    assert routes["commit"].call_count == 1 + 3
    # backoff_factor 1.0, full jitter: the n-th wait is drawn from [0, 2**n] seconds
    assert len(sleeps) == 3
    assert all(0 <= wait <= 2**n for n, wait in enumerate(sleeps, start=1))


def test_publish_creates_the_repo_and_commits_every_file_at_once(api: respx.MockRouter, http: httpx.Client) -> None:
    routes = mock_github(api)
    result = GitHubPublisher("gho_token", http_client=http).publish(REPO)
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
        "private": True,  # private unless the caller asks
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
    assert not http.is_closed  # borrowed: the pipeline that made it closes it


def test_a_taken_name_is_retried_with_a_suffix_a_bounded_number_of_times(
    api: respx.MockRouter, http: httpx.Client
) -> None:
    routes = mock_github(
        api,
        create=[
            httpx.Response(422, json=NAME_TAKEN),
            httpx.Response(201, json=repo_created("explain-regular-expressions-2")),
        ],
    )
    assert GitHubPublisher("t", http_client=http).publish(REPO).repo_name == "explain-regular-expressions-2"
    names = [json.loads(c.request.content)["name"] for c in routes["create"].calls]
    assert names == ["explain-regular-expressions", "explain-regular-expressions-2"]

    routes["create"].reset()
    routes["create"].mock(return_value=httpx.Response(422, json=NAME_TAKEN))
    with pytest.raises(PublishError, match="already exists") as failed:
        GitHubPublisher("t", http_client=http, name_attempts=3).publish(REPO)
    assert failed.value.status == 422
    assert routes["create"].call_count == 3


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
    api: respx.MockRouter, http: httpx.Client, status: int, body: dict[str, object], fragment: str
) -> None:
    route = api.post(f"{API}/user/repos").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(PublishError, match=fragment) as failed:
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert failed.value.status == status
    assert failed.value.errors == body.get("errors", [])
    assert route.call_count == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"message": "Server Error"}),
        httpx.Response(502, json={"message": "Bad Gateway"}),
        httpx.Response(503, json={"message": "Service Unavailable"}, headers={"Retry-After": "1"}),
        httpx.Response(429, json=SECONDARY_RATE_LIMIT, headers={"Retry-After": "1"}),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("connection refused"),
    ],
    ids=["500", "502", "503", "429", "read-timeout", "connect-error"],
)
def test_creating_the_repository_is_never_retried(
    api: respx.MockRouter, http: httpx.Client, sleeps: list[float], failure: httpx.Response | Exception
) -> None:
    routes = mock_github(api)
    routes["create"].mock(side_effect=[failure, httpx.Response(201, json=repo_created("explain-regular-expressions"))])
    expected = f"\\({failure.status_code}\\)" if isinstance(failure, httpx.Response) else "cannot reach GitHub"
    with pytest.raises(PublishError, match=expected):
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert routes["create"].call_count == 1  # the repository may exist: a retry would create a second one
    assert routes["ref"].call_count == 0
    assert sleeps == []


def test_a_429_is_retried_after_the_wait_github_asked_for(
    api: respx.MockRouter, http: httpx.Client, sleeps: list[float]
) -> None:
    routes = mock_github(api)
    routes["commit"].mock(
        side_effect=[
            httpx.Response(429, json=SECONDARY_RATE_LIMIT, headers={"Retry-After": "7"}),
            httpx.Response(200, json={"sha": PARENT, "tree": {"sha": BASE_TREE}}),
        ]
    )
    assert GitHubPublisher("t", http_client=http).publish(REPO).commit_sha == COMMIT
    assert routes["commit"].call_count == 2
    assert sleeps == [7.0]


def test_a_very_long_retry_after_is_capped_so_one_publish_cannot_hang(
    api: respx.MockRouter, http: httpx.Client, sleeps: list[float]
) -> None:
    routes = mock_github(api)
    limited = httpx.Response(429, json=SECONDARY_RATE_LIMIT, headers={"Retry-After": "3600"})
    routes["commit"].mock(return_value=limited)
    with pytest.raises(PublishError, match="secondary rate limit") as failed:
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert failed.value.status == 429
    assert sleeps == [60.0, 60.0]  # at most 60 s each, 120 s for the whole request
    assert routes["commit"].call_count == 1 + RETRIES


def test_a_5xx_is_retried_up_to_the_bound_then_raises(
    api: respx.MockRouter, http: httpx.Client, sleeps: list[float]
) -> None:
    routes = mock_github(api)
    routes["commit"].mock(return_value=httpx.Response(503, json={"message": "Service Unavailable"}))
    with pytest.raises(PublishError, match="503") as failed:
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert failed.value.status == 503
    assert routes["commit"].call_count == 1 + RETRIES
    assert len(sleeps) == RETRIES
    assert routes["tree"].call_count == 0

    # the ref update (PATCH to an absolute SHA) is idempotent, so it is retried too
    routes["commit"].mock(return_value=httpx.Response(200, json={"sha": PARENT, "tree": {"sha": BASE_TREE}}))
    flaky = httpx.Response(502, json={"message": "Bad Gateway"})
    routes["update_ref"].mock(side_effect=[flaky, httpx.Response(200, json={"object": {"sha": COMMIT}})])
    assert GitHubPublisher("t", http_client=http).publish(REPO).commit_sha == COMMIT
    assert routes["update_ref"].call_count == 2


@pytest.mark.parametrize("route", ["tree", "new_commit"])
def test_git_object_posts_are_sent_once(api: respx.MockRouter, http: httpx.Client, route: str) -> None:
    routes = mock_github(api)
    routes[route].mock(return_value=httpx.Response(502, json={"message": "Bad Gateway"}))
    with pytest.raises(PublishError, match="502"):
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert routes[route].call_count == 1


def test_transport_errors_are_retried_then_raise(api: respx.MockRouter, http: httpx.Client) -> None:
    routes = mock_github(api)
    ok = httpx.Response(200, json={"sha": PARENT, "tree": {"sha": BASE_TREE}})
    routes["commit"].mock(side_effect=[httpx.ConnectTimeout("timed out"), ok])
    assert GitHubPublisher("t", http_client=http).publish(REPO).commit_sha == COMMIT
    assert routes["commit"].call_count == 2

    routes["commit"].reset()
    routes["commit"].mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(PublishError, match="cannot reach GitHub: connection refused") as failed:
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert failed.value.status is None
    assert routes["commit"].call_count == 1 + RETRIES


def test_the_new_repository_is_waited_for_a_bounded_time(
    api: respx.MockRouter, http: httpx.Client, sleeps: list[float]
) -> None:
    routes = mock_github(api)
    ready = httpx.Response(200, json={"ref": "refs/heads/main", "object": {"sha": PARENT, "type": "commit"}})
    routes["ref"].mock(side_effect=[httpx.Response(404, json=NOT_FOUND), httpx.Response(409, json=EMPTY_REPO), ready])
    assert GitHubPublisher("t", http_client=http).publish(REPO).commit_sha == COMMIT
    assert routes["ref"].call_count == 3
    assert len(sleeps) == 2
    assert all(0 <= s <= REF_READY_RETRY.max_backoff_wait for s in sleeps)

    sleeps.clear()
    routes["ref"].reset()
    routes["ref"].mock(side_effect=None, return_value=httpx.Response(404, json=NOT_FOUND))
    with pytest.raises(PublishError, match="Not Found") as failed:
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert failed.value.status == 404
    assert routes["ref"].call_count == 1 + REF_READY_RETRY.total
    assert sum(sleeps) <= 15.0
    # only that GET treats 404 as "not ready yet": elsewhere a 404 is an answer
    routes["ref"].mock(return_value=ready)
    routes["commit"].reset()
    routes["commit"].mock(return_value=httpx.Response(404, json=NOT_FOUND))
    with pytest.raises(PublishError, match="404"):
        GitHubPublisher("t", http_client=http).publish(REPO)
    assert routes["commit"].call_count == 1


def test_topics_failing_does_not_unpublish(api: respx.MockRouter, http: httpx.Client) -> None:
    routes = mock_github(api)
    routes["topics"].mock(return_value=httpx.Response(422, json={"message": "Invalid topics"}))
    result = GitHubPublisher("t", http_client=http).publish(REPO)
    assert result.url == "https://github.com/octocat/explain-regular-expressions"
    assert "Invalid topics" in result.metadata()["topics_error"]

    routes["topics"].mock(side_effect=httpx.ReadTimeout("timed out"))
    result = GitHubPublisher("t", http_client=http).publish(REPO)
    assert result.commit_sha == COMMIT
    assert "cannot reach GitHub" in result.metadata()["topics_error"]


def test_unexpected_bodies_are_publish_errors(api: respx.MockRouter, http: httpx.Client) -> None:
    api.post(f"{API}/user/repos").mock(return_value=httpx.Response(201, text="<html>proxy</html>"))
    with pytest.raises(PublishError, match="not JSON"):
        GitHubPublisher("t", http_client=http).publish(REPO)
    api.post(f"{API}/user/repos").mock(return_value=httpx.Response(500, json=["not", "an", "object"]))
    with pytest.raises(PublishError, match="500"):
        GitHubPublisher("t", http_client=http).publish(REPO)


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
    charges_when_pushed: list[list[str]] = []

    def create_repo(request: httpx.Request) -> httpx.Response:
        # The push is a user-visible side effect: the credit must already be captured when it starts.
        charges_when_pushed.append([c.status.value for c in client.credits.charges(user.id)])
        return httpx.Response(201, json=repo_created(json.loads(request.content)["name"]))

    routes["create"].mock(side_effect=create_repo)

    result = pipeline.expand(user.id, idea_id=idea, format="github_repo")
    assert charges_when_pushed == [["captured"]]
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
    assert pipeline.publish(partial.outputs[0].id) == published  # already published: nothing sent again

    # one HTTP client for every GitHub call of this pipeline, closed with it
    github = pipeline.github_http
    assert all(call.request.headers.get("authorization") for call in routes["create"].calls)
    pipeline.close()
    assert github.is_closed
