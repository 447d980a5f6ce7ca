"""Publishing a generated repository to the user's GitHub account through GitHub's REST API.

Create the repository (initialised, so it has a branch), commit every file in one commit through the
Git Data API (one tree, one commit, one ref update), then set its topics. The owner comes from GitHub's
response, never from the user's display name. A name that is taken is retried with a numbered suffix,
a bounded number of times. Any refusal raises `PublishError`; nothing is faked.

Retries are not written here: `github_http_client` builds the one client the pipeline owns (and closes),
whose `httpx_retries.RetryTransport` retries 429/5xx and transport errors with a bounded, jittered
exponential backoff that honours `Retry-After`. The publisher only borrows that client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from httpx_retries import Retry, RetryTransport

from .._exceptions import PublishError
from ..types import GitHubRepoContent

__all__ = ["GitHubPublisher", "PublishError", "PublishResult", "github_http_client"]

API = "https://api.github.com"
API_VERSION = "2022-11-28"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Only methods whose repetition cannot duplicate anything are retried by the transport. Every POST is
# sent once: above all POST /user/repos, since after a timeout or a 5xx the repository may exist and a
# retry would create a second one. PATCH is listed on purpose: the only PATCH here moves a branch ref to
# an absolute commit SHA, so sending it twice leaves the same state. PUT (topics) replaces the whole list.
RETRY_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
# Right after creation the new repository's git data may not exist yet: GitHub answers 404 or 409 for
# its branch ref for a moment. That one GET carries its own bounded policy (httpx-retries honours a
# per-request `Retry` in `request.extensions["retry"]`), which also treats those two statuses as
# "not ready yet": at most 5 more tries, jittered backoff from 1 s, at most 4 s each, 15 s in total.
REF_READY_RETRY = Retry(
    total=5,
    allowed_methods=["GET"],
    status_forcelist=RETRY_STATUSES | {404, 409},
    backoff_factor=0.5,
    max_backoff_wait=4.0,
    total_timeout=15.0,
)


def github_http_client(*, timeout: float = 30.0, retries: int = 3, backoff_factor: float = 1.0) -> httpx.Client:
    """The HTTP client for GitHub's API; whoever calls this owns it and must close it.

    `retries` bounds the retries of one request (429, 500, 502, 503, 504, and timeouts / network errors
    before a response arrives) on the idempotent methods in `RETRY_METHODS`. The wait is GitHub's
    `Retry-After` when sent, else `backoff_factor * 2**attempt` with full jitter; no single wait exceeds
    60 s and the waits of one request add up to at most 120 s. `timeout` applies to each attempt.
    """
    retry = Retry(
        total=retries,
        allowed_methods=RETRY_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        max_backoff_wait=60.0,
        total_timeout=120.0,
    )
    return httpx.Client(
        transport=RetryTransport(httpx.HTTPTransport(), retry=retry),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
    )


@dataclass(frozen=True)
class PublishResult:
    url: str
    owner: str
    repo_name: str
    clone_url: str
    commit_sha: str
    files: int
    topics_error: str | None = None

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "owner": self.owner,
            "repo_name": self.repo_name,
            "clone_url": self.clone_url,
            "commit_sha": self.commit_sha,
            "files_committed": self.files,
        }
        if self.topics_error:
            data["topics_error"] = self.topics_error
        return data


class GitHubPublisher:
    def __init__(
        self,
        token: str,
        *,
        http_client: httpx.Client,
        base_url: str = API,
        name_attempts: int = 3,
    ) -> None:
        """`http_client` is borrowed, never closed here: build it with `github_http_client` for retries."""
        self._http = http_client
        self._base = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }
        self._name_attempts = name_attempts

    def publish(
        self, repo: GitHubRepoContent, *, private: bool = True, message: str = "Initial version from idea-expansion"
    ) -> PublishResult:
        """Create the repository (private unless `private=False`), commit every file at once, set topics."""
        created = self._create_repository(repo, private=private)
        owner, name = created["owner"]["login"], created["name"]
        branch = created.get("default_branch") or "main"
        head = self._request("GET", f"/repos/{owner}/{name}/git/ref/heads/{branch}", retry=REF_READY_RETRY)
        parent_sha = head["object"]["sha"]
        parent = self._request("GET", f"/repos/{owner}/{name}/git/commits/{parent_sha}")
        tree = self._request(
            "POST",
            f"/repos/{owner}/{name}/git/trees",
            json={
                "base_tree": parent["tree"]["sha"],
                "tree": [{"path": f.path, "mode": "100644", "type": "blob", "content": f.content} for f in repo.files],
            },
        )
        commit = self._request(
            "POST",
            f"/repos/{owner}/{name}/git/commits",
            json={"message": message, "tree": tree["sha"], "parents": [parent_sha]},
        )
        self._request("PATCH", f"/repos/{owner}/{name}/git/refs/heads/{branch}", json={"sha": commit["sha"]})
        topics_error = None
        if repo.topics:
            # The repository and its commit are what matter: topics failing must not make it look unpublished.
            try:
                self._request("PUT", f"/repos/{owner}/{name}/topics", json={"names": repo.topics[:20]})
            except PublishError as exc:
                topics_error = str(exc)
        return PublishResult(
            url=created["html_url"],
            owner=owner,
            repo_name=name,
            clone_url=created["clone_url"],
            commit_sha=commit["sha"],
            files=len(repo.files),
            topics_error=topics_error,
        )

    def _create_repository(self, repo: GitHubRepoContent, *, private: bool) -> Any:
        description = repo.description if len(repo.description) <= 350 else repo.description[:347] + "..."
        for attempt in range(1, self._name_attempts + 1):
            name = repo.repo_name if attempt == 1 else f"{repo.repo_name[:56]}-{attempt}"
            try:
                # Sent once (POST is not in RETRY_METHODS): after a timeout the repository may exist, and a
                # retry would make a second one. Only a 422 "name taken" leads to another, differently named, try.
                return self._request(
                    "POST",
                    "/user/repos",
                    json={"name": name, "description": description, "private": private, "auto_init": True},
                )
            except PublishError as exc:
                if not exc.name_taken:
                    raise
        raise PublishError(
            f"a repository named {repo.repo_name} (and {self._name_attempts - 1} numbered variants) already exists",
            status=422,
        )

    def _request(self, method: str, path: str, *, json: Any = None, retry: Retry | None = None) -> Any:
        """One call, retried (or not) by the client's transport; `retry` overrides its policy for this call."""
        try:
            response = self._http.request(
                method,
                self._base + path,
                json=json,
                headers=self._headers,
                extensions={"retry": retry} if retry is not None else None,
            )
        except httpx.HTTPError as exc:
            raise PublishError(f"cannot reach GitHub: {exc}") from None
        status = response.status_code
        if status >= 400:
            raise PublishError(_describe(method, path, response), status=status, errors=_errors(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise PublishError(f"GitHub {method} {path} answered {status} with a body that is not JSON") from None


def _errors(response: httpx.Response) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return errors if isinstance(errors, list) else []


def _describe(method: str, path: str, response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("message", ""))
        listed = body.get("errors")
        errors = "; ".join(
            str(e.get("message", e)) for e in (listed if isinstance(listed, list) else []) if isinstance(e, dict)
        )
    else:
        detail, errors = response.text[:200], ""
    status = response.status_code
    if status == 401:
        return "GitHub rejected the token (401 Bad credentials): the user must sign in with GitHub again"
    if status == 403:
        return f"GitHub refused {method} {path} (403): rate limit or missing permission ({detail})"
    return f"GitHub {method} {path} failed ({status}): {detail}" + (f" ({errors})" if errors else "")
