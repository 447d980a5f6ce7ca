"""The run lifecycle against a hostile user: someone with an ordinary account and the PostgREST API
who acts on their own rows at every moment of a run, and a service that writes around the lifecycle.
Nothing they do may produce a delivery without a captured credit, or a user-visible side effect
before the capture. Tests that claim, reap or run the worker use a database of their own."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import respx
from pydantic import ValidationError

from idea_expansion import (
    APIError,
    ConflictError,
    ExecutionStatus,
    IdeaExpansion,
    IdeaStatus,
    InvalidRequestError,
    NotFoundError,
    OutputFormat,
    PipelineError,
    Stage,
)
from idea_expansion.backends._base import Rpc
from idea_expansion.pipeline import OfflineProvider, Pipeline
from idea_expansion.types.expansions import ExpansionOutcome

from ._db import Db
from .test_github_publisher import mock_github

# What a user can do to their own rows through the API, at any moment of a run.
HOSTILE: dict[str, str] = {
    "delete the idea": "delete from public.ideas where id = %(idea)s",
    "archive the idea": "update public.ideas set status = 'archived' where id = %(idea)s",
    "revoke the GitHub token": "delete from public.credentials where provider = 'github'",
    "delete their files": "delete from storage.objects where bucket_id = 'images'",
    "delete their blog posts": "delete from public.blog_posts",
    "delete the output": "delete from public.outputs",
    "delete the execution": "delete from public.executions",
    "mark the idea expanded": "update public.ideas set status = 'expanded' where id = %(idea)s",
}
BEFORE_CAPTURE = [Stage.SELECT, Stage.JUDGE, Stage.CHOOSE_FORMAT, Stage.GENERATE, Stage.IMAGE, Stage.PERSIST]


def as_user(db: Db, user: uuid.UUID, statement: str, **params: Any) -> str:
    """Run one statement as the user, in its own committed request; returns 'ok' or the SQLSTATE."""
    try:
        with db.as_user(user) as conn:
            conn.execute(statement, params)
    except psycopg.Error as exc:
        return exc.sqlstate or "error"
    return "ok"


def github_user(client: IdeaExpansion) -> uuid.UUID:
    return client.users.sign_in_with_github(
        email=f"hostile-{uuid.uuid4().hex[:10]}@example.test", login="octocat", access_token="gho_hostile"
    ).id


def attacked_run(
    client: IdeaExpansion, pipeline: Pipeline, db: Db, stage: Stage, statement: str
) -> tuple[Any, str | None]:
    """One run of a fresh user, who runs `statement` on their own rows when the run enters `stage`.
    Returns the execution as it ended and what the statement got ('ok' or its SQLSTATE)."""
    fmt = OutputFormat.GITHUB_REPO if stage == Stage.PUBLISH else OutputFormat.BLOG_POST
    user = github_user(client)
    idea = client.ideas.create(user_id=user, title="Explain regular expressions", bullets=["cli"]).id
    got: list[str] = []

    def attack(current: Stage, _: uuid.UUID) -> None:
        if current == stage:
            got.append(as_user(db, user, statement, idea=idea))

    try:
        return pipeline.expand(user, idea_id=idea, format=fmt, on_progress=attack).execution, got[0] if got else None
    except PipelineError:  # the run may fail; what matters is what it left behind
        return client.executions.list(user_id=user).data[0], got[0] if got else None


def test_nothing_a_user_does_mid_run_makes_an_expansion_free(client: IdeaExpansion, db: Db) -> None:
    """Every hostile action at every stage: a run that delivers was charged exactly once; one that did
    not deliver left nothing the user can see and gave its credit back."""
    seen: dict[tuple[str, str], str | None] = {}
    with respx.mock(assert_all_called=False) as api, Pipeline(client) as pipeline:
        mock_github(api)
        for action, statement in HOSTILE.items():
            for stage in [*BEFORE_CAPTURE, Stage.PUBLISH]:
                execution, seen[(action, stage.value)] = attacked_run(client, pipeline, db, stage, statement)
                user = execution.user_id
                charges = [c.status.value for c in client.credits.charges(user)]
                files = db.scalar(
                    "select count(*) from storage.objects where bucket_id = 'images' and name like %s", (f"{user}/%",)
                )
                where = f"{action} at {stage}: {seen[(action, stage.value)]}"
                if execution.status in (ExecutionStatus.COMPLETED, ExecutionStatus.PARTIAL):
                    assert charges == ["captured"], where
                    assert client.credits.balance(user).total_expansions_used == 1, where
                else:
                    assert execution.status == ExecutionStatus.FAILED, where
                    assert charges == ["released"], where
                    assert list(client.outputs.list(user_id=user)) == [], where
                    assert files == 0, where
                    assert list(client.blog_posts.list(user_id=user)) == [], where
                    assert client.credits.balance(user).free_expansions_remaining == 5, where

    # Before the capture the run holds its idea: deleting or archiving it is refused (PT409), and
    # nothing else the user may do (grants allow little) stops the run from being charged.
    for stage in BEFORE_CAPTURE:
        assert seen[("delete the idea", stage.value)] == "PT409", stage
        assert seen[("archive the idea", stage.value)] == "PT409", stage
        assert seen[("delete the output", stage.value)] == "42501", stage
        assert seen[("delete the execution", stage.value)] == "42501", stage
        assert seen[("mark the idea expanded", stage.value)] == "42501", stage
    # After the capture the user owns what they paid for: deleting the idea is theirs to do.
    assert seen[("delete the idea", "publish")] == "ok"
    print(f"\n{len(seen)} hostile actions mid-run ({len(HOSTILE)} kinds x {len(BEFORE_CAPTURE) + 1} stages): 0 free")


def test_revoking_the_token_mid_run_is_a_partial_run_charged_once_and_retried_free(
    client: IdeaExpansion, db: Db
) -> None:
    with respx.mock(assert_all_called=False) as api, Pipeline(client) as pipeline:
        routes = mock_github(api)
        user = github_user(client)
        idea = client.ideas.create(user_id=user, title="Explain regular expressions", bullets=["cli"]).id
        api.post("https://api.github.com/user/repos").respond(401, json={"message": "Bad credentials"})

        result = pipeline.expand(user, idea_id=idea, format="github_repo")
        assert (result.status, result.execution.error_step) == (ExecutionStatus.PARTIAL, "publish")
        assert [c.status.value for c in client.credits.charges(user)] == ["captured"]
        assert result.output is not None
        assert result.output.published is False

        client.users.sign_in_with_github(email=client.users.get(user).email, login="octocat", access_token="gho_new")
        routes["create"] = api.post("https://api.github.com/user/repos").respond(
            201,
            json={
                "name": "explain-regular-expressions",
                "owner": {"login": "octocat"},
                "html_url": "https://github.com/octocat/explain-regular-expressions",
                "clone_url": "https://github.com/octocat/explain-regular-expressions.git",
                "default_branch": "main",
            },
        )
        published = pipeline.publish(result.output.id)
        assert published.published is True
        assert [c.status.value for c in client.credits.charges(user)] == ["captured"]  # no second charge


def test_images_are_stored_only_after_the_capture(client: IdeaExpansion, db: Db) -> None:
    stored_at: list[list[str]] = []

    class Watching(Pipeline):
        def _deliver(self, run: Any, finished: Any, on_progress: Any) -> Any:
            stored_at.append([c.status.value for c in client.credits.charges(run.execution.user_id)])
            files = db.scalar("select count(*) from storage.objects where name like %s", (f"%/{run.execution.id}/%",))
            assert files == 0, "nothing stored before the capture"
            return super()._deliver(run, finished, on_progress)

    user = client.users.create(email=f"img-{uuid.uuid4().hex[:8]}@example.test").id
    for fmt in ("image", "blog_post"):
        idea = client.ideas.create(user_id=user, title=f"A poster {fmt}").id
        result = Watching(client).expand(user, idea_id=idea, format=fmt)
        assert result.status == ExecutionStatus.COMPLETED
        path = f"{user}/{result.execution.id}/{'image' if fmt == 'image' else 'cover'}.png"
        assert client.storage.download(path)[:4] == b"\x89PNG"
    assert stored_at == [["captured"], ["captured", "captured"]]


def test_a_failed_upload_after_the_capture_is_partial_and_delivered_again_for_free(client: IdeaExpansion) -> None:
    user = client.users.create(email=f"upl-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="A poster of the night sky").id

    original = client.storage.upload

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise OSError("disk full")

    client.storage.upload = refuse  # type: ignore[method-assign]
    try:
        result = Pipeline(client).expand(user, idea_id=idea, format="image")
    finally:
        client.storage.upload = original  # type: ignore[method-assign]
    assert (result.status, result.execution.error_step) == (ExecutionStatus.PARTIAL, "image")
    assert "disk full" in (result.execution.error_message or "")
    assert [c.status.value for c in client.credits.charges(user)] == ["captured"]
    assert result.output is not None
    Pipeline(client).deliver(result.output.id)
    assert client.storage.download(f"{user}/{result.execution.id}/image.png")[:4] == b"\x89PNG"
    assert client.credits.balance(user).total_expansions_used == 1


def test_finish_and_claim_refuse_a_run_that_holds_no_credit(own_client: IdeaExpansion, own_database: str) -> None:
    client = own_client
    db = Db(own_database)
    try:
        user = client.users.create(email=f"nohold-{uuid.uuid4().hex[:8]}@example.test").id
        idea = client.ideas.create(user_id=user, title="Free lunch").id
        # A service writing around the lifecycle: executions inserted straight into the table hold nothing.
        with db.as_service() as conn:
            running, queued = (
                conn.execute(
                    "insert into public.executions (user_id, selected_idea_id, status) values (%s, %s, %s) "
                    "returning id",
                    (user, idea if status == "running" else None, status),
                ).fetchone()[0]  # type: ignore[index]
                for status in ("running", "queued")
            )
        outcome = ExpansionOutcome(
            status="completed",
            format_chosen="twitter_thread",
            content={"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "x"},  # type: ignore[arg-type]
        )
        with pytest.raises(ConflictError, match="holds no credit") as refused:
            client.expansions.finish(running, outcome)
        assert refused.value.code == "PT409"
        assert client.expansions.claim("worker-1") is None  # the unheld queued run is never claimed
        assert client.executions.get(queued).status == ExecutionStatus.QUEUED
        assert list(client.outputs.list(user_id=user)) == []

        # A run whose hold was released behind its back cannot deliver either.
        other = client.ideas.create(user_id=user, title="Free dinner").id
        started = client.expansions.start(user, idea_id=other, format="twitter_thread")
        with db.admin() as conn:
            conn.execute("select private.settle_credit(%s, %s, false)", (user, started.execution.id))
        with pytest.raises(ConflictError, match="holds no credit"):
            client.expansions.finish(started.execution.id, outcome)
        assert list(client.outputs.list(user_id=user)) == []
        assert client.credits.balance(user).total_expansions_used == 0
        # it can still be recorded as failed
        failed = client.expansions.finish(
            started.execution.id, ExpansionOutcome(status="failed", error_step=Stage.GENERATE, error_message="no")
        )
        assert failed.status == ExecutionStatus.FAILED
    finally:
        db.close()


def test_a_queued_run_whose_idea_is_deleted_is_cancelled_never_switched(
    own_client: IdeaExpansion, own_database: str
) -> None:
    client = own_client
    db = Db(own_database)
    try:
        user = client.users.create(email=f"switch-{uuid.uuid4().hex[:8]}@example.test").id
        draft = client.ideas.create(user_id=user, title="My private draft", description="not for the world").id
        for action, statement in [
            ("delete", "delete from public.ideas where id = %(idea)s"),
            ("archive", "update public.ideas set status = 'archived' where id = %(idea)s"),
        ]:
            idea = client.ideas.create(user_id=user, title=f"Queued then {action}d").id
            run = Pipeline(client).enqueue(user, idea_id=idea, format="blog_post", public=True)
            assert client.credits.balance(user).free_expansions_remaining == 4
            assert as_user(db, user, statement, idea=idea) == "ok"
            cancelled = client.executions.get(run.id)
            assert (cancelled.status, cancelled.error_step) == (ExecutionStatus.FAILED, "cancelled")
            assert f"the idea was {action}d" in (cancelled.error_message or "")
            assert client.credits.balance(user).free_expansions_remaining == 5  # the hold came back
            assert Pipeline(client).run_worker(exit_when_idle=True) == 0
        # the other pending idea was never picked up, charged or published
        assert client.ideas.get(draft).status == IdeaStatus.PENDING
        assert list(client.outputs.list(user_id=user)) == []
        assert list(client.anonymous().blog_posts.list_public()) == []
        assert [c.status.value for c in client.credits.charges(user)] == ["released", "released"]
    finally:
        db.close()


def race_finish_and_reap(client: IdeaExpansion, run_id: uuid.UUID, content: dict[str, Any]) -> dict[str, Any]:
    """Finish (completed) and reap the same stale run at the same moment, from two threads."""
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}
    outcome = ExpansionOutcome(status="completed", format_chosen="twitter_thread", content=content)  # type: ignore[arg-type]

    def finish() -> None:
        barrier.wait()
        try:
            results["finish"] = client.expansions.finish(run_id, outcome)
        except ConflictError as exc:
            results["finish"] = exc

    def reap() -> None:
        barrier.wait()
        results["reap"] = client.expansions.reap(timedelta(minutes=15))

    threads = [threading.Thread(target=finish), threading.Thread(target=reap)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_finish_and_reap_of_one_run_never_both_settle(own_client: IdeaExpansion, own_database: str) -> None:
    client = own_client
    db = Db(own_database)
    outcomes: dict[str, int] = {"finished": 0, "reaped": 0}
    try:
        user = client.users.create(email=f"race-{uuid.uuid4().hex[:8]}@example.test").id
        client.credits.grant(user, 40, "40.00", f"RACE-{uuid.uuid4().hex[:8]}")
        content = {"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "x"}
        for n in range(30):
            idea = client.ideas.create(user_id=user, title=f"Race {n}").id
            run = client.expansions.start(user, idea_id=idea, format="twitter_thread").execution
            with db.admin() as conn:
                conn.execute(
                    "update public.executions set heartbeat_at = now() - interval '1 hour' where id = %s", (run.id,)
                )
            results = race_finish_and_reap(client, run.id, content)
            final = client.executions.get(run.id)
            charge = [c.status.value for c in client.credits.charges(user) if c.idempotency_key == run.id]
            if isinstance(results["finish"], ConflictError):
                assert results["reap"] == [run.id]
                assert (final.status, final.error_step, charge) == (ExecutionStatus.FAILED, "timeout", ["released"])
                assert list(client.outputs.list(execution_id=run.id)) == []
                outcomes["reaped"] += 1
            else:
                assert results["reap"] == []
                assert (final.status, charge) == (ExecutionStatus.COMPLETED, ["captured"])
                outcomes["finished"] += 1
        usage = client.credits.balance(user)
        assert usage.total_expansions_used == outcomes["finished"]
        assert usage.total_remaining == 45 - outcomes["finished"]
        print(f"\n30 finish/reap races: {outcomes}")
    finally:
        db.close()


def test_every_other_transition_is_refused_naming_both_states(client: IdeaExpansion, db: Db) -> None:
    user = client.users.create(email=f"trans-{uuid.uuid4().hex[:8]}@example.test").id
    ideas = [client.ideas.create(user_id=user, title=f"Transition {n}").id for n in range(3)]
    done = Pipeline(client).expand(user, idea_id=ideas[0], format="twitter_thread").execution
    queued = Pipeline(client).enqueue(user, idea_id=ideas[1], format="twitter_thread")
    refused: list[str] = []

    def refuse(call: Callable[[], object], states: str) -> None:
        with pytest.raises(ConflictError) as error:
            call()
        assert error.value.code == "PT409"
        assert states in str(error.value), (states, str(error.value))
        refused.append(states)

    thread = {"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "x"}
    completed = ExpansionOutcome(status="completed", format_chosen="twitter_thread", content=thread)  # type: ignore[arg-type]
    failed = ExpansionOutcome(status="failed", error_step=Stage.JUDGE, error_message="x")
    refuse(lambda: client.expansions.finish(queued.id, completed), "queued -> completed")
    refuse(lambda: client.expansions.finish(done.id, failed), "completed -> failed")
    refuse(lambda: client.expansions.record_stage(done.id, Stage.JUDGE), "is completed, not running")
    refuse(lambda: client.expansions.record_stage(queued.id, Stage.JUDGE), "is queued, not running")
    refuse(lambda: client.expansions.record_delivery(queued.id, "publish", error_message="x"), "is queued")
    assert client.expansions.finish(done.id, completed).execution.status == ExecutionStatus.COMPLETED  # a replay
    for sql, states in [
        ("update public.executions set status = 'running' where id = %(done)s", "completed -> running"),
        ("update public.executions set status = 'queued' where id = %(done)s", "completed -> queued"),
        ("update public.executions set status = 'completed' where id = %(queued)s", "queued -> completed"),
        ("update public.executions set selected_idea_id = %(other)s where id = %(queued)s", "is fixed when it starts"),
    ]:
        with pytest.raises(psycopg.Error) as error, db.as_service() as conn:
            conn.execute(sql, {"done": done.id, "queued": queued.id, "other": ideas[2]})
        assert error.value.sqlstate == "PT409"
        assert states in str(error.value)
        refused.append(states)
    assert len(refused) == 9


def test_unknown_fields_are_errors_on_both_sides(client: IdeaExpansion) -> None:
    with pytest.raises(ValidationError, match="bogus"):
        ExpansionOutcome(status="failed", error_step=Stage.JUDGE, error_message="x", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="extra"):
        ExpansionOutcome(
            status="completed",
            content={"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "x", "extra": 1},  # type: ignore[arg-type]
        )
    with pytest.raises(ValidationError, match="needs error_step"):
        ExpansionOutcome(
            status="partial",
            content={"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "x"},  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidRequestError, match="format"):
        client.expansions.start(uuid.uuid4(), format="video")
    # The database takes named, typed arguments: a misspelt one is an error, never silently dropped.
    with pytest.raises(APIError) as misspelt:
        client.backend.rpc(
            Rpc("finish_expansion", {"p_execution_id": uuid.uuid4(), "p_status": "failed", "p_eror_step": "x"}),
            client.scope,
        )
    assert misspelt.value.code == "42883"


def test_the_offline_pipeline_makes_two_lifecycle_calls(client: IdeaExpansion) -> None:
    calls: list[str] = []
    original = client.backend.rpc

    def counting(request: Rpc, scope: Any) -> Any:
        calls.append(request.function)
        return original(request, scope)

    user = client.users.create(email=f"calls-{uuid.uuid4().hex[:8]}@example.test").id
    client.backend.rpc = counting  # type: ignore[method-assign]
    try:
        for fmt in OutputFormat:
            calls.clear()
            idea = client.ideas.create(user_id=user, title=f"Count {fmt}").id
            Pipeline(client, provider=OfflineProvider()).expand(user, idea_id=idea, format=fmt)
            assert calls == ["start_expansion", "finish_expansion"], (fmt, calls)
    finally:
        client.backend.rpc = original  # type: ignore[method-assign]


def test_a_lost_finish_answer_still_delivers_the_charged_run(client: IdeaExpansion) -> None:
    """The capture commits, the answer is lost: the run is not reported failed, its image is stored."""
    from idea_expansion import APIConnectionError as DatabaseUnreachable

    user = client.users.create(email=f"lost-{uuid.uuid4().hex[:8]}@example.test").id
    idea = client.ideas.create(user_id=user, title="A poster that arrives").id
    real_finish = client.expansions.finish
    answers: list[str] = []

    def finish_then_drop(execution_id: Any, outcome: ExpansionOutcome) -> Any:
        result = real_finish(execution_id, outcome)
        if not answers:
            answers.append("dropped")
            raise DatabaseUnreachable("server closed the connection unexpectedly")
        answers.append("answered")
        return result

    client.expansions.finish = finish_then_drop  # type: ignore[method-assign]
    try:
        result = Pipeline(client).expand(user, idea_id=idea, format="image")
    finally:
        del client.expansions.finish
    assert answers == ["dropped", "answered"]
    assert result.status == ExecutionStatus.COMPLETED
    assert client.storage.download(f"{user}/{result.execution.id}/image.png")[:4] == b"\x89PNG"
    assert [c.status.value for c in client.credits.charges(user)] == ["captured"]


def test_a_failed_record_of_a_push_never_pushes_twice(client: IdeaExpansion) -> None:
    with respx.mock(assert_all_called=False) as api, Pipeline(client) as pipeline:
        routes = mock_github(api)
        user = github_user(client)
        idea = client.ideas.create(user_id=user, title="Explain regular expressions", bullets=["cli"]).id
        real = client.expansions.record_delivery

        def refuse_publication(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("publication_url"):
                raise ConflictError("the database went away", code="PT409")
            return real(*args, **kwargs)

        client.expansions.record_delivery = refuse_publication  # type: ignore[method-assign]
        try:
            result = pipeline.expand(user, idea_id=idea, format="github_repo")
        finally:
            del client.expansions.record_delivery
        assert routes["create"].call_count == 1
        # pushed: the run is not marked as a failed publish (a retry would push a second repository)
        assert (result.status, result.execution.error_step) == (ExecutionStatus.COMPLETED, None)


def test_repositories_are_private_unless_the_run_asked(client: IdeaExpansion) -> None:
    import json

    with respx.mock(assert_all_called=False) as api, Pipeline(client) as pipeline:
        routes = mock_github(api)
        sent = []
        for public in (False, True):
            user = github_user(client)
            idea = client.ideas.create(user_id=user, title="Explain regular expressions", bullets=["cli"]).id
            pipeline.expand(user, idea_id=idea, format="github_repo", public=public)
            sent.append(json.loads(routes["create"].calls.last.request.content)["private"])
    assert sent == [True, False]


def test_a_delivery_error_never_kills_the_worker(own_client: IdeaExpansion) -> None:
    class Exploding(Pipeline):
        exploded = 0

        def _deliver(self, run: Any, finished: Any, on_progress: Any) -> Any:
            if not self.exploded:
                self.exploded += 1
                raise RuntimeError("a bug after the capture")
            return super()._deliver(run, finished, on_progress)

    client = own_client
    user = client.users.create(email=f"boom-{uuid.uuid4().hex[:8]}@example.test").id
    pipeline = Exploding(client)
    runs = [
        pipeline.enqueue(user, idea_id=client.ideas.create(user_id=user, title=f"Boom {n}").id, format="image")
        for n in range(2)
    ]
    assert pipeline.run_worker(concurrency=1, exit_when_idle=True) == 2  # the thread survived the first run
    assert [client.executions.get(r.id).status for r in runs] == [ExecutionStatus.COMPLETED] * 2


def test_the_reaper_skips_a_locked_balance_instead_of_waiting(own_client: IdeaExpansion, own_database: str) -> None:
    client = own_client
    db = Db(own_database)
    try:
        users = [client.users.create(email=f"reap-{n}-{uuid.uuid4().hex[:6]}@example.test").id for n in range(2)]
        runs = [
            client.expansions.start(u, idea_id=client.ideas.create(user_id=u, title="Stale").id).execution
            for u in users
        ]
        with db.admin() as conn:
            conn.execute("update public.executions set heartbeat_at = now() - interval '1 hour'")
        with db.pool.connection() as blocker, blocker.transaction():
            blocker.execute("select 1 from public.usage_tracking where user_id = %s for update", (users[0],))
            assert client.expansions.reap() == [runs[1].id]  # the other user's run, at once
        assert client.expansions.reap() == [runs[0].id]  # and this one on the next round
    finally:
        db.close()


def test_a_user_with_a_run_in_progress_can_still_be_deleted(client: IdeaExpansion) -> None:
    user = client.users.create(email=f"gone-{uuid.uuid4().hex[:8]}@example.test").id
    running = client.expansions.start(user, idea_id=client.ideas.create(user_id=user, title="Running").id)
    client.expansions.start(user, idea_id=client.ideas.create(user_id=user, title="Queued").id, enqueue=True)
    client.users.delete(user)
    with pytest.raises(NotFoundError):
        client.executions.get(running.execution.id)
    with pytest.raises(NotFoundError):  # its worker's finish finds nothing to deliver to
        client.expansions.finish(
            running.execution.id, ExpansionOutcome(status="failed", error_step=Stage.JUDGE, error_message="gone")
        )


def test_status_changes_must_match_the_settlement_for_every_writer(client: IdeaExpansion, db: Db) -> None:
    user = client.users.create(email=f"settle-{uuid.uuid4().hex[:8]}@example.test").id
    run = client.expansions.start(user, idea_id=client.ideas.create(user_id=user, title="Held").id).execution
    for status, message in [("completed", "without its credit captured"), ("failed", "still holds its credit")]:
        with pytest.raises(psycopg.Error) as error, db.as_service() as conn:
            conn.execute(
                "update public.executions set status = %s, completed_at = now() where id = %s", (status, run.id)
            )
        assert (error.value.sqlstate, message in str(error.value)) == ("PT409", True)
    thread = {"format": "twitter_thread", "posts": ["a", "b", "c"], "generated_by": "x"}
    client.expansions.finish(
        run.id,
        ExpansionOutcome(status="completed", format_chosen="twitter_thread", content=thread),  # type: ignore[arg-type]
    )
    for url in ("javascript:alert(1)", "http://example.test/x"):
        with pytest.raises(InvalidRequestError, match="https"):
            client.expansions.record_delivery(run.id, "publish", publication_url=url)
    with pytest.raises(InvalidRequestError, match="only a repository is published"):
        client.expansions.record_delivery(run.id, "publish", publication_url="https://example.test/x")
