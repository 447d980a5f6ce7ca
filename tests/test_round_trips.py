"""One round trip per SDK call on the direct-Postgres backend, proven on the wire.

libpq traces every message of the SDK's one pooled connection (the pool has exactly one, so every call
reuses it); a round trip is one ReadyForQuery from the server, the answer to one Sync (or to one simple
Query, which carries its own). Each call must cost one: BEGIN, the role and JWT claims, the statement and
COMMIT travel together, and the server answers them together. The previous backend spent four (BEGIN,
set_config, the statement and COMMIT, each waited for).
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import pq
from psycopg.types.json import Jsonb

from idea_expansion import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConflictError,
    IdeaExpansion,
    IdeaExpansionError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    Settings,
)
from idea_expansion.backends._base import Insert, Rpc, Scope, Select
from idea_expansion.backends.postgres import PostgresBackend

from .conftest import migrated_database

T = TypeVar("T")

# Functions and a table of this module's own database, to reach every `returns` kind and a COMMIT that fails.
TEST_SCHEMA = """
create function public.rt_context(out uid uuid, out role text, out sub text)
language sql stable
as $$ select auth.uid(), current_user::text, current_setting('request.jwt.claims', true)::jsonb ->> 'sub' $$;
grant execute on function public.rt_context() to anon, authenticated, service_role;

create function public.rt_sleep(p_seconds double precision) returns void
language sql as $$ select pg_sleep(p_seconds) $$;
grant execute on function public.rt_sleep(double precision) to service_role;

create table public.rt_notes (id bigint generated always as identity primary key, body text not null);
grant select, insert on public.rt_notes to service_role;

-- Checked at COMMIT, not by the statement: a note saying 'refuse' fails the transaction's commit.
create function public.rt_refuse_at_commit() returns trigger
language plpgsql as $$
begin
  if new.body = 'refuse' then
    raise exception using errcode = '23514', message = 'refused at commit';
  end if;
  return null;
end $$;
create constraint trigger rt_notes_refuse after insert on public.rt_notes
  deferrable initially deferred for each row execute function public.rt_refuse_at_commit();
"""

_FLAGS = pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE


@dataclass
class Wire:
    """The messages of one stretch of traffic: (F)rontend or (B)ackend, message type, the rest."""

    messages: list[tuple[str, str, str]]

    def count(self, direction: str, kind: str) -> int:
        return sum(1 for d, k, _ in self.messages if (d, k) == (direction, kind))

    @property
    def round_trips(self) -> int:
        """Server ReadyForQuery messages: each one is an answer the client waited for."""
        return self.count("B", "ReadyForQuery")

    @property
    def syncs(self) -> int:
        """Client synchronisation points: Sync messages, and simple Query messages (each its own sync)."""
        return self.count("F", "Sync") + self.count("F", "Query")

    @property
    def statuses(self) -> list[str]:
        """The transaction status of each ReadyForQuery: I idle, T in a transaction, E failed."""
        return [rest.strip() for d, k, rest in self.messages if (d, k) == ("B", "ReadyForQuery")]

    @property
    def commands(self) -> list[str]:
        """The server's command tags, in order (BEGIN, SELECT 1, INSERT 0 1, COMMIT, ROLLBACK, ...)."""
        return [rest.strip().strip('"') for d, k, rest in self.messages if (d, k) == ("B", "CommandComplete")]

    @property
    def errors(self) -> int:
        return self.count("B", "ErrorResponse")


@dataclass
class _Traced:
    conn: psycopg.Connection[Any]
    fd: int
    offset: int = 0


@dataclass
class WireTrace:
    """libpq's protocol trace of every connection opened to one database."""

    dbname: str
    traced: list[_Traced] = field(default_factory=list)

    def attach(self, conn: psycopg.Connection[Any]) -> None:
        if conn.info.dbname != self.dbname:
            return
        fd, name = tempfile.mkstemp(prefix="ie-wire-")
        os.unlink(name)
        conn.pgconn.trace(fd)
        conn.pgconn.set_trace_flags(_FLAGS)
        self.traced.append(_Traced(conn, fd))

    def take(self) -> Wire:
        """Everything sent and received since the last take (on idle connections only)."""
        messages: list[tuple[str, str, str]] = []
        for t in self.traced:
            if not t.conn.closed:
                # libpq buffers its trace stream: untracing flushes it; tracing again resumes at its end.
                t.conn.pgconn.untrace()
            size = os.fstat(t.fd).st_size
            text = os.pread(t.fd, size - t.offset, t.offset).decode("utf-8", "replace")
            t.offset = size
            if not t.conn.closed:
                t.conn.pgconn.trace(t.fd)
                t.conn.pgconn.set_trace_flags(_FLAGS)
            for line in text.splitlines():
                parts = line.split("\t", 3)
                if len(parts) >= 3 and parts[0] in ("F", "B"):
                    messages.append((parts[0], parts[2], parts[3] if len(parts) > 3 else ""))
        return Wire(messages)

    def close(self) -> None:
        for t in self.traced:
            if not t.conn.closed:
                t.conn.pgconn.untrace()
            os.close(t.fd)

    @property
    def open_connections(self) -> list[psycopg.Connection[Any]]:
        return [t.conn for t in self.traced if not t.conn.closed]


@pytest.fixture(scope="module")
def rt_database(fresh_database, project) -> str:  # type: ignore[no-untyped-def]
    url = migrated_database(fresh_database, project, prefix="ie_rt", seed=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TEST_SCHEMA)
    return url


@pytest.fixture(scope="module")
def wire(rt_database: str) -> Iterator[WireTrace]:
    """Traces every connection this process opens to the module's database, while the module runs."""
    with psycopg.connect(rt_database) as conn:
        trace = WireTrace(conn.info.dbname)
    real_connect = psycopg.Connection.__dict__["connect"].__func__

    def connect(cls: type[psycopg.Connection[Any]], *args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        conn = real_connect(cls, *args, **kwargs)
        trace.attach(conn)
        return conn

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Connection, "connect", classmethod(connect))
        yield trace
    trace.close()


def make_client(url: str, key: str, storage: Path, **backend_options: Any) -> IdeaExpansion:
    settings = Settings(_env_file=None, DATABASE_URL=url, ENCRYPTION_KEY=key)  # type: ignore[call-arg]
    backend = PostgresBackend(url, min_size=1, max_size=1, **backend_options)
    return IdeaExpansion(settings=settings, backend=backend, storage_dir=storage)


@pytest.fixture(scope="module")
def sdk(
    rt_database: str, wire: WireTrace, encryption_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IdeaExpansion]:
    """The service client on a pool of exactly one (traced) connection."""
    with make_client(rt_database, encryption_key, tmp_path_factory.mktemp("rt-storage")) as client:
        assert len(wire.open_connections) == 1
        yield client


class Warnings:
    """psycopg's warnings logged during the test ("rolling back returned connection", "error ignored
    terminating ..."). Read when iterated: caplog keeps a separate list for each test phase, so a list
    taken while the fixture is set up would stay empty whatever the test logs."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def __iter__(self) -> Iterator[logging.LogRecord]:
        return iter([r for r in self._caplog.records if r.name.startswith("psycopg")])


@pytest.fixture
def pool_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[Warnings]:
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        yield Warnings(caplog)


def on_wire(wire: WireTrace, call: Callable[[], T]) -> tuple[T, Wire]:
    wire.take()
    result = call()
    return result, wire.take()


def one_round_trip(wire: WireTrace, call: Callable[[], T]) -> T:
    """Run `call` and assert it cost one round trip: one sync, one answer, one committed transaction."""
    result, seen = on_wire(wire, call)
    assert (seen.syncs, seen.round_trips) == (1, 1), seen.messages
    assert seen.statuses == ["I"]
    assert seen.commands[0] == "BEGIN", seen.commands
    assert seen.commands[-1] == "COMMIT", seen.commands
    assert seen.errors == 0
    return result


def new_user(sdk: IdeaExpansion) -> uuid.UUID:
    return sdk.users.create(email=f"rt-{uuid.uuid4().hex[:10]}@example.test").id


def test_reads_are_one_round_trip(sdk: IdeaExpansion, wire: WireTrace) -> None:
    alice = sdk.for_user(new_user(sdk))
    idea = alice.ideas.create(title="Read me")
    listed = one_round_trip(wire, lambda: alice.ideas.list(limit=50))
    assert [i.id for i in listed] == [idea.id]
    assert one_round_trip(wire, lambda: alice.ideas.get(idea.id)).title == "Read me"


def test_writes_are_one_round_trip(sdk: IdeaExpansion, wire: WireTrace) -> None:
    alice = sdk.for_user(new_user(sdk))
    idea = one_round_trip(wire, lambda: alice.ideas.create(title="Write me", bullets=["one"]))
    updated = one_round_trip(wire, lambda: alice.ideas.update(idea.id, title="Written"))
    assert updated.title == "Written"
    one_round_trip(wire, lambda: alice.ideas.delete(idea.id))
    with pytest.raises(NotFoundError):
        alice.ideas.get(idea.id)


def test_every_rpc_kind_is_one_round_trip(sdk: IdeaExpansion, wire: WireTrace) -> None:
    user = new_user(sdk)
    assert one_round_trip(wire, lambda: sdk.credits.check(user)) is True  # scalar
    assert isinstance(one_round_trip(wire, lambda: sdk.expansions.reap()), list)  # values
    summary = one_round_trip(wire, lambda: sdk.reports.users())  # rows
    assert any(row.email.startswith("rt-") for row in summary.data)
    row = one_round_trip(  # row
        wire, lambda: sdk.backend.rpc(Rpc("rt_context", {}, returns="row"), Scope("authenticated", user))
    )
    assert row == {"uid": user, "role": "authenticated", "sub": str(user)}


def test_the_role_and_claims_are_those_of_the_statement(sdk: IdeaExpansion, wire: WireTrace) -> None:
    user = new_user(sdk)
    context = Rpc("rt_context", {}, returns="row")
    as_user, seen = on_wire(wire, lambda: sdk.backend.rpc(context, Scope("authenticated", user)))
    assert as_user == {"uid": user, "role": "authenticated", "sub": str(user)}
    # BEGIN, set_config (role and claims), the statement, COMMIT: one transaction, answered at once.
    assert seen.commands == ["BEGIN", "SELECT 1", "SELECT 1", "COMMIT"]
    assert (seen.round_trips, seen.statuses) == (1, ["I"])
    # Local settings: the next request on the same connection starts from nothing.
    assert sdk.backend.rpc(context, Scope("anon")) == {"uid": None, "role": "anon", "sub": None}


def test_storage_calls_are_one_round_trip(sdk: IdeaExpansion, wire: WireTrace) -> None:
    user = new_user(sdk)
    alice = sdk.for_user(user)
    alice.storage.upload(f"{user}/warm.png", b"warm")  # reads the bucket's limits (kept for a minute)
    path = f"{user}/card.png"
    assert one_round_trip(wire, lambda: alice.storage.upload(path, b"\x89PNG one")) == path
    assert one_round_trip(wire, lambda: alice.storage.upload(path, b"\x89PNG two", upsert=True)) == path
    assert one_round_trip(wire, lambda: alice.storage.download(path)) == b"\x89PNG two"
    assert one_round_trip(wire, lambda: alice.storage.remove(path)) == [path]
    with pytest.raises(NotFoundError):
        one_round_trip(wire, lambda: alice.storage.download(path))


def test_storage_owner_is_the_callers_auth_uid(sdk: IdeaExpansion) -> None:
    user = new_user(sdk)
    path = f"{user}/owned.png"
    sdk.for_user(user).storage.upload(path, b"mine")
    rows = sdk.backend.query(  # type: ignore[attr-defined]
        "select owner from storage.objects where bucket_id = 'images' and name = %s", (path,), Scope("service_role")
    )
    assert rows == [{"owner": user}]


def test_a_refused_upload_leaves_no_file_and_keeps_the_existing_one(sdk: IdeaExpansion, wire: WireTrace) -> None:
    user = new_user(sdk)
    alice = sdk.for_user(user)
    path = f"{user}/keep.png"
    alice.storage.upload(path, b"original")
    folder = sdk.storage_backend.root / "images" / str(user)  # type: ignore[attr-defined]
    with pytest.raises(ConflictError):  # exists, and no upsert: the row insert fails
        alice.storage.upload(path, b"replacement")
    assert alice.storage.download(path) == b"original"
    other = sdk.for_user(new_user(sdk))
    with pytest.raises(PermissionDeniedError):  # outside the caller's folder: RLS refuses the row
        other.storage.upload(f"{user}/intruder.png", b"intruder")
    assert sorted(p.name for p in folder.iterdir()) == ["keep.png"]  # no temporary files left behind
    one_round_trip(wire, lambda: alice.storage.download(path))


@pytest.mark.parametrize("error", ["no credits", "duplicate", "rls refusal", "refused at commit"])
def test_errors_map_as_before_and_the_connection_stays_clean(
    sdk: IdeaExpansion, wire: WireTrace, pool_warnings: Warnings, error: str
) -> None:
    user = new_user(sdk)
    if error == "no credits":
        sdk.backend.query(  # type: ignore[attr-defined]
            "update public.usage_tracking set free_expansions_remaining = 0 where user_id = %s",
            (user,),
            Scope("service_role"),
        )
        expected: type[Exception] = InsufficientCreditsError
        code = "PT402"

        def fail() -> object:
            return sdk.credits.consume(user)
    elif error == "duplicate":
        address = sdk.users.get(user).email
        expected, code = ConflictError, "23505"

        def fail() -> object:
            return sdk.users.create(email=address)
    elif error == "rls refusal":
        someone_else = new_user(sdk)
        expected, code = PermissionDeniedError, "42501"

        def fail() -> object:
            return sdk.for_user(user).ideas.create(title="Not mine", user_id=someone_else)
    else:
        expected, code = InvalidRequestError, "23514"

        def fail() -> object:
            return sdk.backend.execute(Insert("rt_notes", [{"body": "refuse"}]), Scope("service_role"))

    wire.take()
    with pytest.raises(expected) as raised:
        fail()
    seen = wire.take()
    assert raised.value.code == code  # type: ignore[attr-defined]
    # The request itself was one pipeline; a failed transaction is then rolled back (on this path only).
    assert seen.messages.index(("F", "Sync", "")) > 0
    assert seen.statuses[-1] == "I"
    assert seen.round_trips <= 3  # the request, ROLLBACK, and psycopg's DEALLOCATE ALL after a rollback
    if error == "refused at commit":
        assert seen.commands == ["BEGIN", "SELECT 1", "INSERT 0 1"]
        assert seen.round_trips == 1
        rows = sdk.backend.execute(Select("rt_notes"), Scope("service_role"))
        assert all(row["body"] != "refuse" for row in rows)  # COMMIT failed: the statement's row went too
    else:
        assert seen.statuses[0] == "E"
        assert "ROLLBACK" in seen.commands

    # The same pooled connection, idle and clean: the next call is one round trip again.
    assert sdk.for_user(user).credits.balance().user_id == user
    one_round_trip(wire, lambda: sdk.for_user(user).ideas.list())
    assert [r.getMessage() for r in pool_warnings] == []


def test_a_failed_request_leaves_no_role_and_no_rows_behind(sdk: IdeaExpansion, wire: WireTrace) -> None:
    user = new_user(sdk)
    failing = (
        "with note as (insert into public.rt_notes (body) values ('half done') returning id) "
        "select id / 0 as boom from note"
    )
    with pytest.raises(InvalidRequestError):  # 22012: division by zero, after the insert
        sdk.backend.query(failing, None, Scope("service_role"))  # type: ignore[attr-defined]
    rows = sdk.backend.execute(Select("rt_notes"), Scope("service_role"))
    assert all(row["body"] != "half done" for row in rows)
    context = one_round_trip(wire, lambda: sdk.backend.rpc(Rpc("rt_context", {}, returns="row"), Scope("anon")))
    assert context == {"uid": None, "role": "anon", "sub": None}
    assert sdk.for_user(user).credits.check() is True


def test_a_statement_timeout_is_a_timeout_error(
    rt_database: str, wire: WireTrace, encryption_key: str, tmp_path: Path, pool_warnings: Warnings
) -> None:
    with make_client(rt_database, encryption_key, tmp_path, statement_timeout_ms=200) as client:
        with pytest.raises(APITimeoutError):
            client.backend.rpc(Rpc("rt_sleep", {"p_seconds": 5}), Scope("service_role"))
        one_round_trip(wire, lambda: client.backend.rpc(Rpc("rt_sleep", {"p_seconds": 0}), client.scope))
    assert [r.getMessage() for r in pool_warnings] == []


def test_a_lost_connection_is_reported_and_replaced(
    sdk: IdeaExpansion, wire: WireTrace, rt_database: str, pool_warnings: Warnings
) -> None:
    user = new_user(sdk)
    (conn,) = wire.open_connections  # the client's one pooled connection
    with psycopg.connect(rt_database, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
    with pytest.raises(IdeaExpansionError) as raised:
        sdk.credits.check(user)
    # Mapped as before: a closed socket is an APIConnectionError; had libpq read the server's farewell
    # first, its SQLSTATE (57P01, admin shutdown) would be the error's code.
    assert isinstance(raised.value, APIConnectionError) or getattr(raised.value, "code", None) == "57P01"
    # The pool drops the broken connection and opens a new one (traced too): one round trip again.
    assert one_round_trip(wire, lambda: sdk.credits.check(user)) is True
    assert all("rolling back" not in r.getMessage() for r in pool_warnings)


def test_json_values_read_back_exactly(sdk: IdeaExpansion) -> None:
    # The backend decodes json with the connection's encoding (not json.loads' detection on bytes).
    alice = sdk.for_user(new_user(sdk))
    bullets = ["café ✓ 𝄞", 'quote " and \\ backslash', "line\nbreak", "a\u2028b"]
    idea = alice.ideas.create(title="Unicode", bullets=bullets, external_links=["https://example.test/ä?q=1"])
    again = alice.ideas.get(idea.id)
    assert again.bullets == bullets
    assert again.external_links == ["https://example.test/ä?q=1"]
    (row,) = sdk.backend.query(  # type: ignore[attr-defined]
        "select %s::jsonb as value", (Jsonb({"n": [1, 2.5, None, True], "s": "é"}),), Scope("anon")
    )
    assert row["value"] == {"n": [1, 2.5, None, True], "s": "é"}


def test_failed_requests_log_nothing(fresh_database, project, pool_warnings: Warnings) -> None:  # type: ignore[no-untyped-def]
    """An error read inside the pipeline, raised through it, made psycopg log "error ignored terminating
    <Pipeline ... host=... user=... database=...>" for most failed requests (16 of 20 duplicates)."""
    # Its own database, untraced (the trace of this module's database slows the wire down enough to hide it).
    backend = PostgresBackend(migrated_database(fresh_database, project, seed=False), min_size=1, max_size=2)
    try:
        service = Scope("service_role")
        address = f"dup-{uuid.uuid4().hex[:8]}@example.test"
        backend.execute(Insert("users", [{"email": address}]), service)
        failing: list[Callable[[], object]] = [
            lambda: backend.execute(Insert("users", [{"email": address}]), service),
            lambda: backend.query("select 1 / 0", None, service),
            lambda: backend.query("select %s::uuid", ("nope",), service),
        ]
        for call in failing:
            for _ in range(20):
                with pytest.raises(APIError):
                    call()
    finally:
        backend.close()
    assert [r.getMessage() for r in pool_warnings] == []


def test_a_value_python_cannot_read_is_reported_as_committed(sdk: IdeaExpansion, rt_database: str) -> None:
    """The rows arrive with the COMMIT's answer: when only decoding fails, the error says the write stands."""
    with psycopg.connect(rt_database, autocommit=True) as conn:
        conn.execute("create table public.rt_moments (id int primary key, at timestamptz)")
        conn.execute("grant all on public.rt_moments to service_role")
    try:
        with pytest.raises(APIError) as caught:
            sdk.backend.execute(Insert("rt_moments", [{"id": 1, "at": "infinity"}]), Scope("service_role"))  # type: ignore[attr-defined]
        assert "committed" in caught.value.message
        assert caught.value.hint == "the change was made: do not retry it"
        with psycopg.connect(rt_database) as conn:
            assert conn.execute("select count(*) from public.rt_moments").fetchone() == (1,)
    finally:
        with psycopg.connect(rt_database, autocommit=True) as conn:
            conn.execute("drop table public.rt_moments")


def test_limit_and_offset_are_counts_or_refused(sdk: IdeaExpansion) -> None:
    """They are written into the statement, so anything but a non-negative int is refused first (True was
    read as 1; NaN raised a bare ValueError)."""
    for bad in (
        {"limit": True},
        {"offset": True},
        {"limit": -1},
        {"offset": -5},
        {"limit": 1.5},
        {"offset": float("nan")},
    ):
        with pytest.raises(InvalidRequestError, match="must be a non-negative integer"):
            sdk.backend.execute(Select("ideas", **bad), Scope("service_role"))  # type: ignore[attr-defined,arg-type]
    assert sdk.backend.execute(Select("ideas", limit=0, offset=0), Scope("service_role")) == []  # type: ignore[attr-defined]


def test_json_reads_back_from_a_sql_ascii_database(server_url: str) -> None:
    """A SQL_ASCII database (initdb under a C locale) declares no encoding: json.loads reads its bytes."""
    name = f"ie_test_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"create database {name} encoding 'SQL_ASCII' lc_collate 'C' lc_ctype 'C' template template0")
    try:
        url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
        backend = PostgresBackend(url, min_size=1, max_size=1)
        try:
            # The statement is ASCII (a SQL_ASCII connection encodes it so); E'' escapes put UTF-8 bytes in.
            (row,) = backend.query(
                r"""select E'{"n": "caf\xc3\xa9 \xe2\x9c\x93"}'::jsonb as j,"""
                r"""       E'{"n": "caf\xc3\xa9 \xe2\x9c\x93"}'::json as k""",
                None,
                Scope("service_role"),
            )
            assert row == {"j": {"n": "café ✓"}, "k": {"n": "café ✓"}}
        finally:
            backend.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")


def test_local_files_always_match_their_rows_under_races(
    rt_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename after the commit ran outside any lock: a slow upsert could put its file over a newer
    row's, and an upload racing a remove left a file with no row. A refused upload made folders."""
    import threading
    import time

    from idea_expansion.backends import storage as storage_module

    backend = PostgresBackend(rt_database, min_size=2, max_size=4)
    storage = storage_module.LocalStorage(backend, tmp_path)
    service, slow, fast = Scope("service_role"), b"A" * 10, b"B" * 20
    real_replace = os.replace

    def descheduled_replace(source: Any, target: Any) -> None:
        if Path(source).read_bytes() == slow:
            time.sleep(0.4)  # the thread loses the CPU between its COMMIT and its rename
        real_replace(source, target)

    monkeypatch.setattr(storage_module.os, "replace", descheduled_replace)
    owner = uuid.uuid4()
    try:
        for name in ("x.png", "y.png"):
            path = f"{owner}/{name}"
            first = threading.Thread(target=storage.upload, args=("images", path, slow, "image/png", True, service))
            first.start()
            time.sleep(0.15)
            if name == "x.png":
                storage.upload("images", path, fast, "image/png", True, service)
            else:
                storage.remove("images", [path], service)
            first.join()
            rows = backend.query("select metadata from storage.objects where name = %s", (path,), service)
            on_disk = tmp_path / "images" / path
            if rows:
                assert on_disk.read_bytes() == (fast if rows[0]["metadata"]["size"] == 20 else slow)
            else:
                assert not on_disk.exists()
        stranger = uuid.uuid4()
        with pytest.raises(PermissionDeniedError):
            storage.upload(
                "images", f"{stranger}/z.png", slow, "image/png", False, Scope("authenticated", user_id=uuid.uuid4())
            )
        assert not (tmp_path / "images" / str(stranger)).exists()
        assert list((tmp_path / ".staging").iterdir()) == []
    finally:
        backend.close()


def test_rpc_argument_names_are_plain_sql_names(sdk: IdeaExpansion) -> None:
    """A name is also a %(name)s placeholder; one that would end it early is refused with a typed error."""
    for name in ('p_user_id)s" => 1, "x', "p_user_id)s", "P-1", ""):
        with pytest.raises(InvalidRequestError, match="invalid argument name"):
            sdk.backend.rpc(Rpc("expansion_status", {name: 1}), Scope("service_role"))  # type: ignore[attr-defined]
