"""The expansion pipeline: select/judge -> choose format -> generate -> image -> publish -> persist.

Postgres decides everything that matters: `start_expansion` holds a credit (or refuses with PT402)
before any generation, `record_expansion_stage` is each stage's heartbeat, and `finish_expansion` writes
the output, blog post, idea status, execution status and the credit capture in one transaction. A run
that fails is finished as failed (credit released); one whose worker dies is reaped by
`reap_stale_expansions`. Python only orchestrates.

Publishing runs before the final write so that the publication lands in the same transaction as the
output; a publish (or cover image) failure makes the run `partial`, still charged once, never faked.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .._exceptions import APIError, IdeaExpansionError, NotFoundError, PipelineError
from ..backends._base import Eq, In, Json, Rpc, Select
from ..resources._base import IdLike, parse_id, to_model
from ..types import Execution, ExecutionStatus, Idea, IdeaStatus, Output, OutputFormat, Provider, Stage
from .content import (
    BlogDraft,
    FormatDecision,
    ImageContent,
    ImageDraft,
    JudgeVerdict,
    OutputContent,
    RepoDraft,
    StoredImage,
    ThreadDraft,
    parse_content,
)
from .formats import build_blog_post, build_repo, build_thread, render_title_card
from .github import GitHubPublisher, PublishError
from .providers import Completion, IdeaBrief, ProviderError, Task
from .providers import Provider as ModelProvider

if TYPE_CHECKING:
    from .._client import IdeaExpansion

__all__ = ["ExpansionResult", "ExpansionStatus", "Pipeline", "ProgressCallback"]

log = logging.getLogger("idea_expansion.pipeline")
T = TypeVar("T", bound=BaseModel)
ProgressCallback = Callable[[Stage, uuid.UUID], None]
STALE_AFTER = timedelta(minutes=15)
"""How long a running execution may go without a heartbeat before the reaper fails it."""
ImageRenderer = Callable[[ImageDraft], tuple[bytes, int, int, int]]
"""Makes a PNG for a draft: (bytes, width, height, tokens spent)."""

INSTRUCTIONS: dict[Task, str] = {
    "judge": "Score how promising and ready to expand this idea is, 0-100, and say why in two sentences.",
    "choose_format": "Choose the format that suits the idea best: blog_post, twitter_thread, github_repo or image.",
    "blog_post": "Write a clear blog post (600-1200 words) in sections, with tags, a meta description of at "
    "most 160 characters and a social post of at most 280 characters.",
    "twitter_thread": "Write a thread of 3-10 posts, each at most 270 characters, without numbering them.",
    "github_repo": "Design a small, runnable Python repository: README.md, main.py and requirements.txt at least, "
    "a lower-case hyphenated name, a description and run instructions.",
    "image": "Describe one image that captures the idea: a text-to-image prompt, a caption and a short headline.",
}
_DRAFTS: dict[OutputFormat, type[BaseModel]] = {
    OutputFormat.BLOG_POST: BlogDraft,
    OutputFormat.TWITTER_THREAD: ThreadDraft,
    OutputFormat.GITHUB_REPO: RepoDraft,
    OutputFormat.IMAGE: ImageDraft,
}


@dataclass(frozen=True)
class ExpansionResult:
    """A finished (completed or partial) run, or the current state of one another caller started."""

    execution: Execution
    outputs: list[Output]

    @property
    def status(self) -> ExecutionStatus:
        return self.execution.status

    @property
    def output(self) -> Output | None:
        return self.outputs[0] if self.outputs else None

    def content(self) -> OutputContent | None:
        """The main output's content, typed."""
        output = self.output
        return None if output is None else parse_content(output.format, output.content)


@dataclass(frozen=True)
class ExpansionStatus:
    execution_id: uuid.UUID
    status: ExecutionStatus
    current_stage: Stage | None
    output_ids: list[uuid.UUID]
    error_message: str | None
    error_step: str | None


@dataclass
class _Run:
    """What a run has learned so far; sent with every stage heartbeat and with the finish."""

    execution: Execution
    tokens: int = 0
    idea: Idea | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    soft_errors: list[tuple[Stage, str]] = field(default_factory=list)

    def add(self, completion: Completion[Any]) -> None:
        self.tokens += completion.tokens

    def payload(self) -> dict[str, Any]:
        return {**self.fields, "tokens_used": self.tokens}


class Pipeline:
    """Runs expansions for a service client. Build it with `client.pipeline` (or directly, to choose
    providers): `Pipeline(client, provider=OfflineProvider())`."""

    def __init__(
        self,
        client: IdeaExpansion,
        *,
        provider: ModelProvider,
        image_renderer: ImageRenderer | None = None,
        github_http: Any = None,
        github_api_url: str = "https://api.github.com",
        stale_after: timedelta | None = None,
    ) -> None:
        if client.scope.role != "service_role":
            raise IdeaExpansionError("the pipeline runs on the service client, not a user or anonymous view")
        self._client = client
        self.provider = provider
        self._render_image = image_renderer or _title_card
        self._github_http = github_http
        self._github_api = github_api_url
        self.stale_after = stale_after or STALE_AFTER

    # -- public API -------------------------------------------------------------------------------------
    def expand(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        idempotency_key: IdLike | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ExpansionResult:
        """Run one expansion now and return it once finished (completed or partial).

        Raises:
            InsufficientCreditsError: the user has no credit (nothing is generated).
            PipelineError: the run failed; it is recorded as failed and its credit released.
            InvalidRequestError / NotFoundError: a bad format, or an idea that is not the user's or not pending.
        """
        execution, created = self._start(user_id, idea_id, format, idempotency_key, enqueue=False)
        if not created:  # a retry with the same key: report that run, never run it a second time
            return self._replayed(execution)
        return self._execute(execution, on_progress)

    def enqueue(
        self,
        user_id: IdLike,
        *,
        idea_id: IdLike | None = None,
        format: OutputFormat | str | None = None,
        idempotency_key: IdLike | None = None,
    ) -> Execution:
        """Queue an expansion for the workers. Its credit is held now, so queueing beyond the balance is
        refused with `InsufficientCreditsError` just as running would be."""
        return self._start(user_id, idea_id, format, idempotency_key, enqueue=True)[0]

    def status(self, execution_id: IdLike) -> ExpansionStatus:
        """Where a run is: status, stage, its outputs and its error if any."""
        execution = self._client.executions.get(execution_id)
        outputs = self._outputs(execution.id)
        return ExpansionStatus(
            execution_id=execution.id,
            status=execution.status,
            current_stage=execution.current_stage,
            output_ids=[o.id for o in outputs],
            error_message=execution.error_message,
            error_step=execution.error_step,
        )

    def reap(self, stale_after: timedelta | None = None) -> list[uuid.UUID]:
        """Fail running executions whose worker stopped (no heartbeat) and release their credits."""
        interval = stale_after if stale_after is not None else self.stale_after
        ids = self._rpc("reap_stale_expansions", {"p_stale_after": interval}, returns="values")
        reaped = [parse_id(i) for i in ids or []]
        if reaped:
            log.warning("reaped %d stale execution(s): %s", len(reaped), ", ".join(map(str, reaped)))
        return reaped

    def run_worker(
        self,
        *,
        concurrency: int = 1,
        poll_interval: float = 0.5,
        stop: threading.Event | None = None,
        exit_when_idle: bool = False,
        max_runs: int | None = None,
        worker_id: str | None = None,
    ) -> int:
        """Process queued expansions with `concurrency` threads until `stop` is set (or the queue is empty,
        with `exit_when_idle`). Any number of workers, in any number of processes, may share a database:
        each queued run is claimed exactly once. Returns how many runs this worker processed."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        stop = stop or threading.Event()
        base = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        lock = threading.Lock()
        processed = 0

        def loop(index: int) -> None:
            nonlocal processed
            name = f"{base}/{index}"
            last_reap = 0.0
            failures = 0
            while not stop.is_set():
                try:
                    if index == 0 and time.monotonic() - last_reap > 30:
                        last_reap = time.monotonic()
                        self.reap()
                    with lock:
                        if max_runs is not None and processed >= max_runs:
                            return
                        processed += 1  # reserve the slot before claiming
                    try:
                        claimed = self._claim(name)
                    except BaseException:
                        with lock:
                            processed -= 1
                        raise
                    failures = 0
                except Exception:  # a database blip must not silently kill the worker thread
                    failures += 1
                    log.exception("worker %s could not claim or reap (attempt %d); retrying", name, failures)
                    stop.wait(min(30.0, poll_interval * 2**failures))
                    continue
                if claimed is None:
                    with lock:
                        processed -= 1
                    if exit_when_idle:
                        return
                    stop.wait(poll_interval)
                    continue
                try:
                    self._execute(claimed, None)
                except PipelineError as exc:
                    log.warning("execution %s failed at %s: %s", exc.execution_id, exc.stage, exc)

        threads = [threading.Thread(target=loop, args=(i,), name=f"expansion-worker-{i}") for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return processed

    def publish(self, output_id: IdLike) -> Output:
        """Publish (again) a generated repository whose publishing failed; no credit is charged.

        Raises:
            PublishError: GitHub refused; NotFoundError: no such output or no GitHub credential.
        """
        output = self._client.outputs.get(output_id)
        content = parse_content(output.format, output.content)
        if output.format != OutputFormat.GITHUB_REPO:
            raise IdeaExpansionError(f"only github_repo outputs are published, not {output.format}")
        if output.published:
            return output
        result = self._github(output.user_id).publish(content)  # type: ignore[arg-type]
        return self._client.outputs.record_publication(output.id, url=result.url, metadata=result.metadata())

    # -- a run ------------------------------------------------------------------------------------------
    def _start(
        self,
        user_id: IdLike,
        idea_id: IdLike | None,
        format: OutputFormat | str | None,
        idempotency_key: IdLike | None,
        *,
        enqueue: bool,
    ) -> tuple[Execution, bool]:
        started = self._rpc(
            "start_expansion",
            {
                "p_user_id": parse_id(user_id, "user id"),
                "p_idea_id": None if idea_id is None else parse_id(idea_id, "idea id"),
                "p_format": None if format is None else str(OutputFormat(format)),
                "p_idempotency_key": None if idempotency_key is None else parse_id(idempotency_key, "idempotency key"),
                "p_enqueue": enqueue,
            },
        )
        return to_model(Execution, started["execution"]), bool(started["created"])

    def _claim(self, worker: str) -> Execution | None:
        rows = self._rpc("claim_next_expansion", {"p_worker_id": worker}, returns="rows")
        return to_model(Execution, rows[0]) if rows else None

    def _replayed(self, execution: Execution) -> ExpansionResult:
        if execution.status == ExecutionStatus.FAILED:
            raise PipelineError(
                f"expansion {execution.id} failed at {execution.error_step}: {execution.error_message}",
                execution_id=execution.id,
                stage=execution.error_step or "unknown",
            )
        return ExpansionResult(execution, self._outputs(execution.id))

    def _execute(self, execution: Execution, on_progress: ProgressCallback | None) -> ExpansionResult:
        run = _Run(execution)
        stage = Stage.SELECT
        try:
            self._enter(run, stage, on_progress)
            candidates = self._candidates(execution)

            stage = Stage.JUDGE
            self._enter(run, stage, on_progress)
            self._judge(run, candidates)

            stage = Stage.CHOOSE_FORMAT
            self._enter(run, stage, on_progress)
            chosen = self._choose_format(run)

            stage = Stage.GENERATE
            self._enter(run, stage, on_progress)
            content, draft = self._generate(run, chosen)

            if chosen in (OutputFormat.IMAGE, OutputFormat.BLOG_POST):
                stage = Stage.IMAGE
                self._enter(run, stage, on_progress)
                content = self._image(run, chosen, content, draft)

            publication: dict[str, Any] = {}
            if chosen == OutputFormat.GITHUB_REPO:
                stage = Stage.PUBLISH
                self._enter(run, stage, on_progress)
                publication = self._publish(run, content)

            stage = Stage.PERSIST
            self._enter(run, stage, on_progress)
            return self._persist(run, content, publication)
        except Exception as exc:  # every failure is recorded; the caller gets a PipelineError
            message = _describe(exc)
            self._fail(run, stage, message)
            raise PipelineError(
                f"expansion {execution.id} failed at {stage}: {message}", execution_id=execution.id, stage=stage
            ) from exc

    def _enter(self, run: _Run, stage: Stage, on_progress: ProgressCallback | None) -> None:
        # start_expansion / claim_next_expansion already put the run in `select` with a fresh heartbeat.
        if stage != Stage.SELECT:
            self._rpc(
                "record_expansion_stage",
                {"p_execution_id": run.execution.id, "p_stage": stage.value, "p_fields": Json(run.payload())},
            )
        if on_progress is not None:
            on_progress(stage, run.execution.id)

    def _candidates(self, execution: Execution) -> list[Idea]:
        if execution.selected_idea_id is not None:
            return [self._client.ideas.get(execution.selected_idea_id)]
        in_flight = {
            row["selected_idea_id"]
            for row in self._client.backend.execute(
                Select(
                    "executions",
                    [Eq("user_id", execution.user_id), In("status", ["queued", "running"])],
                    columns=("selected_idea_id",),
                ),
                self._client.scope,
            )
        }
        pending = [
            idea
            for idea in self._client.ideas.list(user_id=execution.user_id, status=IdeaStatus.PENDING, limit=20)
            if idea.id not in in_flight
        ]
        if not pending:
            raise NotFoundError("the user has no pending idea to expand", code="PT404")
        return pending

    def _judge(self, run: _Run, candidates: list[Idea]) -> None:
        best: tuple[int, Idea, JudgeVerdict] | None = None
        for idea in candidates:
            verdict = self._ask("judge", JudgeVerdict, idea, run)
            self._rpc(
                "record_idea_evaluation",
                {"p_idea_id": idea.id, "p_score": verdict.score, "p_execution_id": run.execution.id},
            )
            if best is None or verdict.score > best[0]:
                best = (verdict.score, idea, verdict)
        assert best is not None
        _, run.idea, verdict = best
        run.fields |= {
            "selected_idea_id": str(run.idea.id),
            "judge_score": verdict.score,
            "judge_reasoning": verdict.reasoning,
        }

    def _choose_format(self, run: _Run) -> OutputFormat:
        forced = run.execution.requested_format
        if forced is not None:
            run.fields |= {"format_chosen": forced.value, "format_reasoning": "Requested by the caller."}
            return forced
        decision = self._ask("choose_format", FormatDecision, self._idea(run), run)
        run.fields |= {"format_chosen": decision.format.value, "format_reasoning": decision.reasoning}
        return decision.format

    def _generate(self, run: _Run, chosen: OutputFormat) -> tuple[OutputContent | ImageDraft, BaseModel]:
        draft = self._ask(chosen.value, _DRAFTS[chosen], self._idea(run), run)
        by = self.provider.name
        if isinstance(draft, BlogDraft):
            return build_blog_post(draft, generated_by=by), draft
        if isinstance(draft, ThreadDraft):
            return build_thread(draft, generated_by=by), draft
        if isinstance(draft, RepoDraft):
            return build_repo(draft, generated_by=by), draft
        assert isinstance(draft, ImageDraft)
        return draft, draft  # the image itself is made in the image stage

    def _image(self, run: _Run, chosen: OutputFormat, content: Any, draft: BaseModel) -> OutputContent:
        if chosen == OutputFormat.IMAGE:
            assert isinstance(draft, ImageDraft)
            stored = self._store_image(run, draft, "image.png")  # the main output: a failure fails the run
            return ImageContent(
                prompt=draft.prompt, caption=draft.caption, image=stored, generated_by=self.provider.name
            )
        # A blog post's cover card is extra: without it the post is still saved, as a partial run.
        try:
            card = ImageDraft(
                prompt=f"Title card for {content.title}", caption=content.meta_description, headline=content.title[:120]
            )
            stored = self._store_image(run, card, "cover.png")
            return content.model_copy(update={"cover_image": stored})  # type: ignore[no-any-return]
        except Exception as exc:
            run.soft_errors.append((Stage.IMAGE, f"cover image failed: {_describe(exc)}"))
            return content  # type: ignore[no-any-return]

    def _store_image(self, run: _Run, draft: ImageDraft, name: str) -> StoredImage:
        data, width, height, tokens = self._render_image(draft)
        run.tokens += tokens
        path = f"{run.execution.user_id}/{run.execution.id}/{name}"
        self._client.storage.upload(path, data, content_type="image/png", upsert=True)
        return StoredImage(
            storage_path=path,
            url=self._client.storage.public_url(path),
            width=width,
            height=height,
            mime_type="image/png",
        )

    def _publish(self, run: _Run, content: Any) -> dict[str, Any]:
        try:
            result = self._github(run.execution.user_id).publish(content)
        except IdeaExpansionError as exc:  # GitHub refusing, no token, a token that no longer decrypts
            if isinstance(exc, PublishError) and exc.status == 401:
                self._client.credentials.mark_validated(Provider.GITHUB, False, user_id=run.execution.user_id)
            run.soft_errors.append((Stage.PUBLISH, f"publishing to GitHub failed: {_describe(exc)}"))
            return {}
        return {"publication_url": result.url, "publication_metadata": result.metadata()}

    def _github(self, user_id: uuid.UUID) -> GitHubPublisher:
        try:
            token = self._client.credentials.get_secret(Provider.GITHUB, user_id=user_id)
        except NotFoundError:
            raise NotFoundError(
                "no active GitHub token: the user must sign in with GitHub to publish repositories", code="PT404"
            ) from None
        return GitHubPublisher(token, http_client=self._github_http, base_url=self._github_api)

    def _persist(self, run: _Run, content: Any, publication: dict[str, Any]) -> ExpansionResult:
        status = "partial" if run.soft_errors else "completed"
        result = run.payload()
        if run.soft_errors:
            result["error_step"] = run.soft_errors[0][0].value
            result["error_message"] = "; ".join(message for _, message in run.soft_errors)
        result["output"] = {"format": content.format, "content": content.model_dump(mode="json"), **publication}
        if content.format == OutputFormat.BLOG_POST:
            result["blog_post"] = {
                "title": content.title,
                "slug": content.slug,
                "markdown_content": content.markdown,
                "html_content": content.html,
                "meta_description": content.meta_description,
                "tags": content.tags,
            }
        row = self._rpc(
            "finish_expansion",
            {"p_execution_id": run.execution.id, "p_status": status, "p_result": Json(result)},
            returns="row",
        )
        execution = to_model(Execution, row)
        return ExpansionResult(execution, self._outputs(execution.id))

    def _fail(self, run: _Run, stage: Stage, message: str) -> None:
        result = run.payload() | {"error_step": stage.value, "error_message": message[:2000]}
        try:
            self._rpc(
                "finish_expansion",
                {"p_execution_id": run.execution.id, "p_status": "failed", "p_result": Json(result)},
                returns="row",
            )
        except IdeaExpansionError as exc:
            # The database is unreachable or the run was reaped: the reaper (or nothing) is left to do.
            log.error("could not record failure of %s: %s", run.execution.id, exc)

    # -- helpers ----------------------------------------------------------------------------------------
    def _ask(self, task: Task, schema: type[T], idea: Idea, run: _Run) -> T:
        completion = self.provider.generate(task, schema, idea=_brief(idea), instructions=INSTRUCTIONS[task])
        run.add(completion)
        return completion.value

    @staticmethod
    def _idea(run: _Run) -> Idea:
        assert run.idea is not None, "the judge stage selects the idea"
        return run.idea

    def _outputs(self, execution_id: uuid.UUID) -> list[Output]:
        return self._client.outputs.list(execution_id=execution_id)

    def _rpc(self, function: str, args: dict[str, Any], *, returns: Any = "scalar") -> Any:
        return self._client.backend.rpc(Rpc(function, args, returns=returns), self._client.scope)


def _brief(idea: Idea) -> IdeaBrief:
    return IdeaBrief(
        title=idea.title,
        description=idea.description,
        bullets=tuple(str(b) for b in idea.bullets),
        external_links=tuple(str(link) for link in idea.external_links),
    )


def _title_card(draft: ImageDraft) -> tuple[bytes, int, int, int]:
    return render_title_card(draft.headline, draft.caption), 1200, 630, 0


def _describe(exc: BaseException) -> str:
    # API, provider and publisher errors already say what failed; anything else is named by its type.
    if isinstance(exc, APIError | ProviderError | PublishError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
