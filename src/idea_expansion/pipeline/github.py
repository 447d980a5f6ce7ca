"""Publishing a generated repository to the user's GitHub account through GitHub's REST API.

Create the repository (initialised, so it has a branch), commit every file in one commit through the
Git Data API (one tree, one commit, one ref update), then set its topics. The owner comes from GitHub's
response, never from the user's display name. A name that is taken is retried with a numbered suffix,
a bounded number of times. Any refusal raises `PublishError`; nothing is faked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from .._exceptions import IdeaExpansionError
from .content import GitHubRepoContent

__all__ = ["GitHubPublisher", "PublishError", "PublishResult"]

API = "https://api.github.com"
API_VERSION = "2022-11-28"


class PublishError(IdeaExpansionError):
    """GitHub refused or failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []
        """GitHub's structured `errors` list (resource, field, code), when it sent one."""

    @property
    def name_taken(self) -> bool:
        """A 422 whose error is about the repository name: it exists already on this account."""
        return self.status == 422 and any(
            isinstance(e, dict) and e.get("resource") == "Repository" and e.get("field") == "name" for e in self.errors
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
        http_client: httpx.Client | None = None,
        base_url: str = API,
        name_attempts: int = 3,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
    ) -> None:
        self._http = http_client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self._base = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }
        self._name_attempts = name_attempts
        self._max_retries = max_retries
        self._backoff = backoff_seconds

    def publish(
        self, repo: GitHubRepoContent, *, message: str = "Initial version from idea-expansion"
    ) -> PublishResult:
        created = self._create_repository(repo)
        owner, name = created["owner"]["login"], created["name"]
        branch = created.get("default_branch") or "main"
        head = self._request("GET", f"/repos/{owner}/{name}/git/ref/heads/{branch}", retry_statuses={404, 409})
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

    def _create_repository(self, repo: GitHubRepoContent) -> Any:
        description = repo.description if len(repo.description) <= 350 else repo.description[:347] + "..."
        for attempt in range(1, self._name_attempts + 1):
            name = repo.repo_name if attempt == 1 else f"{repo.repo_name[:56]}-{attempt}"
            try:
                # Never retried: after a timeout the repository may exist, and a retry would make a second one.
                return self._request(
                    "POST",
                    "/user/repos",
                    json={"name": name, "description": description, "private": False, "auto_init": True},
                    retries=0,
                )
            except PublishError as exc:
                if not exc.name_taken:
                    raise
        raise PublishError(
            f"a repository named {repo.repo_name} (and {self._name_attempts - 1} numbered variants) already exists",
            status=422,
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        retry_statuses: frozenset[int] | set[int] = frozenset(),
        retries: int | None = None,
    ) -> Any:
        limit = self._max_retries if retries is None else retries
        for attempt in range(limit + 1):
            try:
                response = self._http.request(method, self._base + path, json=json, headers=self._headers)
            except httpx.HTTPError as exc:
                if attempt == limit:
                    raise PublishError(f"cannot reach GitHub: {exc}") from None
                time.sleep(self._backoff * 2**attempt)
                continue
            status = response.status_code
            retryable = status in (429, 500, 502, 503, 504) or status in retry_statuses
            if retryable and attempt < limit:
                time.sleep(_retry_after(response) or self._backoff * 2**attempt)
                continue
            if status >= 400:
                raise PublishError(_describe(method, path, response), status=status, errors=_errors(response))
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise PublishError(f"GitHub {method} {path} answered {status} with a body that is not JSON") from None
        raise PublishError(f"GitHub {method} {path} kept failing")  # pragma: no cover - loop always returns


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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
