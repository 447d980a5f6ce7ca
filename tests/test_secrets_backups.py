"""Stored secrets and backups (issue 9): key rotation that finishes, envelope parsing that only ever raises
`DecryptionError`, a validation status users cannot set, restores that never destroy first, private backup files."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql
from typer.testing import Result

from idea_expansion import (
    DatabaseSetupError,
    DecryptionError,
    Encryptor,
    IdeaExpansion,
    PermissionDeniedError,
    Settings,
    ValidationStatus,
    generate_key,
)
from idea_expansion.local import maintenance
from idea_expansion.local.maintenance import _read_archive, _tool, backup, table_fingerprints

from ._clients import CLIENT_KINDS, client_of_kind
from ._db import Db
from .conftest import use_cli_environment
from .test_cli import run

USER = uuid.uuid4()


@pytest.fixture(params=CLIENT_KINDS)
def client(request: pytest.FixtureRequest, client: IdeaExpansion) -> IdeaExpansion:
    """The service client, sync or async: the tests here that use it run on both (tests/_clients.py)."""
    chosen: IdeaExpansion = client_of_kind(request, client)
    return chosen


def legacy_encrypt(key: bytes, plaintext: str) -> str:
    """The original app's format: 16-byte IV, no AAD."""
    iv = secrets.token_bytes(16)
    sealed = AESGCM(key).encrypt(iv, plaintext.encode(), None)
    return json.dumps({"ciphertext": sealed[:-16].hex(), "iv": iv.hex(), "authTag": sealed[-16:].hex()})


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_cli_environment(monkeypatch, tmp_path, columns=200, cwd=tmp_path)  # outside the checkout: no .env


# -- envelopes: DecryptionError and nothing else -------------------------------------------------------------
def malformed_envelopes(encryptor: Encryptor) -> Iterator[Any]:
    good = encryptor.encrypt("sk-secret", user_id=USER, provider="github")
    fields = json.loads(good)
    legacy = json.loads(legacy_encrypt(secrets.token_bytes(32), "sk-secret"))
    deep_list = "[" * 100_000
    yield from (deep_list, deep_list + "]" * 100_000, "{" * 100_000, '{"a":' * 100_000, "[" * 999 + "]" * 999)
    yield from ('{"v":' * 5000 + "2" + "}" * 5000, '{"v": 2, "kid": ' + "[" * 50_000 + "]" * 50_000 + "}")
    yield from ("", " ", "not json", "{", "}", "[]", "{}", "null", "true", "0", '"text"', "1" * 5000, "1e999999")
    yield from ('{"ciphertext": 5}', '{"ciphertext": 5, "iv": 5, "authTag": 5}', '{"v": 2}', '{"v": "2"}')
    yield from ('{"v": [2]}', '{"v": {"v": 2}}', '{"v": null}', '{"v": true}', '{"v": 2.5}', '{"v": 1e999}')
    yield from ("\ud800", '"\\ud800"', "\x00", "{\x00}", "x" * 1_000_000, "{" + " " * 2_000_000 + "}")
    yield from (None, 5, 5.5, True, [], {}, ["a"], {"v": 2}, object(), b"\xff\xfe", bytearray(b"{}"), b"[" * 5000)
    values: list[Any] = [None, 5, -1, 5.5, True, [], {}, [[[["x"]]]], "", "zz", "0", "0" * 100_001, "é" * 10]
    values += ["\ud800", "00" * 11, "00" * 13, "00" * 15, "00" * 17, "0" * 23, {"a": [1, {"b": None}]}]
    for field in fields:
        for value in values:
            yield json.dumps(fields | {field: value})
        yield json.dumps({k: v for k, v in fields.items() if k != field})
    for field in legacy:
        for value in values:
            yield json.dumps(legacy | {field: value})
    yield json.dumps(fields | {"kid": encryptor.current_key_id * 2})
    yield good[:-1] + ', "extra": ' + "[" * 50_000 + "]" * 50_000 + "}"
    for cut in range(len(good)):
        yield good[:cut]
        yield good[:cut] + good[cut + 1 :]
    for position in range(0, len(good), 3):
        yield good[:position] + "\x7f" + good[position + 1 :]


def test_malformed_envelopes_raise_only_decryption_error() -> None:
    encryptor = Encryptor(bytes.fromhex(generate_key()), [bytes.fromhex(generate_key())])
    tried = 0
    for envelope in malformed_envelopes(encryptor):
        tried += 1
        label = repr(envelope)[:60]
        try:
            encryptor.decrypt(envelope, user_id=USER, provider="github")
        except DecryptionError as exc:
            message = str(exc)
        except BaseException as exc:  # the point: nothing else may come out
            pytest.fail(f"decrypt({label}) raised {type(exc).__name__}: {str(exc)[:200]}")
        else:
            pytest.fail(f"decrypt({label}) succeeded")
        assert len(message) < 400, f"{label}: the message echoes the input ({len(message)} chars)"
        try:
            assert isinstance(encryptor.needs_rotation(envelope), bool)
        except DecryptionError:
            pass
        except BaseException as exc:
            pytest.fail(f"needs_rotation({label}) raised {type(exc).__name__}: {str(exc)[:200]}")
    assert tried > 450


# -- rotation ----------------------------------------------------------------------------------------------
JUNK = [
    "[" * 16384,  # the longest value the column takes
    "[" * 8000 + "]" * 8000,
    "{}",
    '{"ciphertext": 5}',
    "x" * 16384,
    "1" * 5000,
    "null",
    '{"v": 2, "kid": {"nested": [[[]]]}, "iv": 1}',
    '{"ciphertext": "00", "iv": "' + "00" * 16 + '", "authTag": "' + "00" * 16 + '"}',
]


def settings(url: str, key: str, *old: str) -> Settings:
    return Settings(_env_file=None, DATABASE_URL=url, ENCRYPTION_KEY=key, ENCRYPTION_KEYS_OLD=",".join(old))  # type: ignore[call-arg]


def credential_id(db: Db, user_id: uuid.UUID, provider: str) -> uuid.UUID:
    value: uuid.UUID = db.scalar(
        "select id from public.credentials where user_id = %s and provider = %s", (user_id, provider)
    )
    return value


def seed_rotation(
    url: str, tmp_path: Path, old_key: str, new_key: str
) -> tuple[Db, dict[tuple[uuid.UUID, str], str], set[uuid.UUID]]:
    """Good rows under the old key (v2 and the original app's format), one under the new key, and rows
    each user junked through the API (as themselves, through RLS)."""
    db = Db(url)
    good: dict[tuple[uuid.UUID, str], str] = {}
    providers = ("openai", "anthropic", "github", "twitter", "replicate")
    with IdeaExpansion(settings=settings(url, old_key), backend="postgres", storage_dir=tmp_path) as before:
        for index in range(3):
            user = db.create_user()
            for provider in providers[:2]:
                secret = f"sk-{provider}-{index}-{uuid.uuid4().hex[:6]}"
                before.for_user(user).credentials.set(provider, secret)
                good[(user, provider)] = secret
        legacy_user = db.create_user()
        secret = "gho_from_the_original_app"
        with db.as_user(legacy_user) as conn:
            conn.execute(
                "insert into public.credentials (user_id, provider, encrypted_value) values (%s, 'github', %s)",
                (legacy_user, legacy_encrypt(bytes.fromhex(old_key), secret)),
            )
        good[(legacy_user, "github")] = secret
        marked = next(iter(good))
        before.credentials.mark_validated(marked[1], True, user_id=marked[0])
    with IdeaExpansion(settings=settings(url, new_key), backend="postgres", storage_dir=tmp_path) as current:
        user = db.create_user()
        current.for_user(user).credentials.set("openai", "sk-already-current")
        good[(user, "openai")] = "sk-already-current"
    junk: set[uuid.UUID] = set()
    for index, value in enumerate(JUNK):
        user = db.create_user()
        provider = providers[index % len(providers)]
        with db.as_user(user) as conn:
            conn.execute(
                "insert into public.credentials (user_id, provider, encrypted_value) values (%s, %s, %s)",
                (user, provider, value),
            )
        junk.add(credential_id(db, user, provider))
    # and one user junks a row that was good: an update, as the user
    victim = next(k for k in good if k[1] == "anthropic")
    with db.as_user(victim[0]) as conn:
        conn.execute(
            "update public.credentials set encrypted_value = %s where user_id = %s and provider = 'anthropic'",
            ("[" * 16384, victim[0]),
        )
    junk.add(credential_id(db, *victim))
    del good[victim]
    return db, good, junk


def test_rotate_finishes_and_reports_rows_it_cannot_read(own_database: str, tmp_path: Path) -> None:
    old_key, new_key = generate_key(), generate_key()
    db, good, junk = seed_rotation(own_database, tmp_path, old_key, new_key)
    marked = next(iter(good))
    try:
        with IdeaExpansion(settings=settings(own_database, new_key, old_key), backend="postgres") as rotating:
            report = rotating.credentials.rotate()
            assert report.rotated == len(good) - 1  # all but the row already under the new key
            assert sorted(report.failed) == sorted(junk)
            assert not report.clean
            again = rotating.credentials.rotate()
            assert (again.rotated, sorted(again.failed)) == (0, sorted(junk))
        with IdeaExpansion(settings=settings(own_database, new_key), backend="postgres") as retired:
            for (user, provider), secret in good.items():
                assert retired.credentials.get_secret(provider, user_id=user) == secret
            statuses = {
                (c.user_id, c.provider.value): c.validation_status for c in retired.credentials.list(user_id=marked[0])
            }
            assert statuses[marked] == ValidationStatus.VALID, "re-encrypting the same secret keeps its verdict"
        assert (
            db.scalar(
                "select count(*) from public.credentials where encrypted_value like '%%' || %s || '%%'",
                (Encryptor(bytes.fromhex(old_key)).current_key_id,),
            )
            == 0
        )
    finally:
        db.close()


def test_rotate_keys_command_exits_1_while_any_row_failed(
    own_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_env: None
) -> None:
    old_key, new_key = generate_key(), generate_key()
    db, good, junk = seed_rotation(own_database, tmp_path, old_key, new_key)
    try:
        monkeypatch.setenv("ENCRYPTION_KEY", new_key)
        monkeypatch.setenv("ENCRYPTION_KEYS_OLD", old_key)
        failed = run("admin", "rotate-keys", "--db-url", own_database)
        assert failed.exit_code == 1, failed.output
        assert f"{len(good) - 1} credential(s) re-encrypted" in failed.output
        assert f"{len(junk)} could not be read" in failed.output
        for credential in junk:
            assert str(credential) in failed.output
        with db.admin() as conn:
            conn.execute("delete from public.credentials where id = any(%s)", (list(junk),))
        clean = run("admin", "rotate-keys", "--db-url", own_database)
        assert clean.exit_code == 0, clean.output
        assert "0 credential(s) re-encrypted" in clean.output
        assert "ENCRYPTION_KEYS_OLD" in clean.output  # says the old key may now be retired
    finally:
        db.close()


# -- validation status: the service's verdict, never the user's ---------------------------------------------
def test_users_cannot_set_their_validation_status(db: Db, client: IdeaExpansion) -> None:
    user = db.create_user()
    for status in ("valid", "invalid"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="validation_status"), db.as_user(user) as conn:
            conn.execute(
                "insert into public.credentials (user_id, provider, encrypted_value, validation_status) "
                "values (%s, 'openai', 'c', %s)",
                (user, status),
            )
    view = client.for_user(user)
    saved = view.credentials.set("openai", "sk-first")  # the SDK's upsert, as the user
    assert saved.validation_status == ValidationStatus.NOT_CHECKED
    assert client.credentials.mark_validated("openai", False, user_id=user).validation_status == "invalid"
    attempts = [
        "update public.credentials set validation_status = 'valid' where user_id = %(user)s",
        "insert into public.credentials (user_id, provider, encrypted_value) values (%(user)s, 'openai', 'c') "
        "on conflict (user_id, provider) do update set validation_status = 'valid'",
        "insert into public.credentials (user_id, provider, encrypted_value, validation_status) "
        "values (%(user)s, 'openai', 'c', 'not_checked') "
        "on conflict (user_id, provider) do update set validation_status = 'valid'",
    ]
    for statement in attempts:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="validation_status"), db.as_user(user) as conn:
            conn.execute(statement, {"user": user})
        assert db.scalar("select validation_status from public.credentials where user_id = %s", (user,)) == "invalid"
    with pytest.raises(PermissionDeniedError):
        view.credentials.mark_validated("openai", True)
    # The service's verdict stands until the secret changes; a new secret is not checked yet.
    assert client.credentials.mark_validated("openai", True, user_id=user).validation_status == "valid"
    with db.as_user(user) as conn:
        conn.execute("update public.credentials set is_active = false where user_id = %s", (user,))
    assert db.scalar("select validation_status from public.credentials where user_id = %s", (user,)) == "valid"
    with db.as_user(user) as conn:
        conn.execute("update public.credentials set encrypted_value = 'swapped' where user_id = %s", (user,))
    assert db.scalar("select validation_status from public.credentials where user_id = %s", (user,)) == "not_checked"
    # Relabelled as another provider's secret: the verdict was about the other provider.
    client.credentials.mark_validated("openai", True, user_id=user)
    with db.as_user(user) as conn:
        conn.execute("update public.credentials set provider = 'twitter' where user_id = %s", (user,))
    assert db.scalar("select validation_status from public.credentials where user_id = %s", (user,)) == "not_checked"
    with db.as_user(user) as conn:
        conn.execute("update public.credentials set provider = 'openai' where user_id = %s", (user,))
    client.credentials.mark_validated("openai", True, user_id=user)
    again = view.credentials.set("openai", "sk-second")
    assert (again.validation_status, again.is_active) == (ValidationStatus.NOT_CHECKED, True)
    assert view.credentials.get_secret("openai") == "sk-second"


# -- backups -------------------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_backup_files_are_private_even_when_they_existed(database_url: str, tmp_path: Path, cli_env: None) -> None:
    previous = os.umask(0)
    try:
        fresh = tmp_path / "fresh.dump"
        backup(database_url, fresh)
        assert mode(fresh) == 0o600
        existing = tmp_path / "existing.dump"
        existing.write_bytes(b"an older backup")
        existing.chmod(0o666)
        result = run("db", "backup", str(existing), "--db-url", database_url)
        assert result.exit_code == 0, result.output
        assert mode(existing) == 0o600
        assert existing.read_bytes().startswith(b"PGDMP")
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["existing.dump", "fresh.dump"]
    finally:
        os.umask(previous)


@pytest.fixture
def backed_up(own_database: str, tmp_path: Path, cli_env: None) -> tuple[str, Path, dict[str, tuple[int, str]]]:
    """A database with rows in every table, its backup, and the backup's fingerprints; then a change made
    after the backup, so "left as it was" and "restored" can be told apart."""
    email = f"backup-{uuid.uuid4().hex[:8]}@example.test"
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("insert into public.users (email, name) values (%s, 'Backup')", (email,))
        conn.execute(
            "insert into public.credentials (user_id, provider, encrypted_value) "
            "select id, 'openai', '{\"v\":2}' from public.users where email = %s",
            (email,),
        )
        conn.execute(
            "insert into auth.users (id, email, raw_user_meta_data) values (gen_random_uuid(), %s, '{}')",
            (f"auth-{uuid.uuid4().hex[:6]}@example.test",),
        )
        conn.execute(
            "insert into public.users (email) select 'bulk-' || g || '@example.test' from generate_series(1, 200) g"
        )
    for args in (
        ("ideas", "add", "Back me up", "-u", email),
        ("expand", "-u", email, "-f", "blog_post"),
        ("admin", "grant-credits", email, "1", "1.00", f"BMC-{uuid.uuid4().hex[:6]}", "--yes"),
    ):
        result = run(*args, "--db-url", own_database)
        assert result.exit_code == 0, result.output
    file = tmp_path / "backup.dump"
    backup(own_database, file)
    with psycopg.connect(own_database) as conn:
        content = table_fingerprints(conn)
    assert all(count > 0 for count, _ in content.values()), content
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("insert into public.users (email) values ('after-the-backup@example.test')")
    return own_database, file, content


def restore_variant(url: str, data: bytes, tmp_path: Path, name: str) -> Result:
    variant = tmp_path / name
    variant.write_bytes(data)
    return run("db", "restore", str(variant), "--db-url", url, "--yes")


def test_a_truncated_backup_leaves_the_database_as_it_was(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    url, file, content = backed_up
    data = file.read_bytes()
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
    size = len(data)
    for cut in sorted(
        {
            0,
            1,
            5,
            64,
            300,
            size // 8,
            size // 4,
            size // 3,
            size // 2,
            2 * size // 3,
            7 * size // 8,
            size - 200,
            size - 30,
            size - 2,
            size - 1,
        }
    ):
        result = restore_variant(url, data[:cut], tmp_path, f"cut-{cut}.dump")
        with psycopg.connect(url) as conn:
            assert table_fingerprints(conn) == before, f"a backup cut at {cut} of {size} bytes changed the database"
        assert result.exit_code == 1, f"a backup cut at {cut} of {size} bytes was restored: {result.output}"
        assert "nothing was changed" in result.output, result.output
    restored = run("db", "restore", str(file), "--db-url", url, "--yes")
    assert restored.exit_code == 0, restored.output
    with psycopg.connect(url) as conn:
        assert table_fingerprints(conn) == content


def test_a_corrupted_backup_is_refused_or_restored_exactly(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some flipped bytes make pg_restore 18 spin forever in a compressed block: those count as refused.
    monkeypatch.setattr(maintenance, "_STALL_SECONDS", 5.0)
    url, file, content = backed_up
    data = file.read_bytes()
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
    refused = 0
    positions = sorted({*range(5, len(data), max(1, len(data) // 23)), len(data) - 3, len(data) // 2 + 1})
    for position in positions:
        corrupt = bytearray(data)
        corrupt[position] ^= 0xFF
        result = restore_variant(url, bytes(corrupt), tmp_path, f"flip-{position}.dump")
        with psycopg.connect(url) as conn:
            after = table_fingerprints(conn)
        if result.exit_code == 0:  # a byte nobody reads (a timestamp, say): then it is the backup, exactly
            assert after == content, f"byte {position} flipped: restored, but not the backup's rows"
            with psycopg.connect(url, autocommit=True) as conn:  # put the post-backup change back
                conn.execute("insert into public.users (email) values ('after-the-backup@example.test')")
            with psycopg.connect(url) as conn:
                before = table_fingerprints(conn)
        else:
            refused += 1
            assert after == before, f"byte {position} flipped: refused, but the database changed"
            assert "nothing was changed" in result.output, result.output
    print(f"\ncorrupted backups: {refused} of {len(positions)} refused, the others restored exactly")
    assert refused >= len(positions) * 2 // 3, f"only {refused} of {len(positions)} corruptions were noticed"


def test_reading_an_archive_stops_a_pg_restore_that_stops_making_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "_STALL_SECONDS", 0.5)
    with pytest.raises(DatabaseSetupError, match="stopped making progress"):
        _read_archive(["sh", "-c", "printf started; exec sleep 30"], "reading the backup")
    with pytest.raises(DatabaseSetupError, match="reading the backup failed: broken"):
        _read_archive(["sh", "-c", "echo broken >&2; exit 1"], "reading the backup")
    assert _read_archive(["sh", "-c", "printf 'a%.0s' $(seq 100000)"], "reading", keep=True) == "a" * 100000


def test_an_archive_without_the_applications_tables_is_refused(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    url, _, _ = backed_up
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
    partial = tmp_path / "users-only.dump"
    empty = tmp_path / "empty.dump"
    pg_dump = _tool("pg_dump", url)
    for target, tables in (
        (partial, ["--table=public.users"]),
        (empty, ["--table=public.users", "--exclude-table-data=public.users"]),
    ):
        subprocess.run(
            [pg_dump, "--format=custom", "--data-only", *tables, f"--file={target}", f"--dbname={url}"], check=True
        )
        result = run("db", "restore", str(target), "--db-url", url, "--yes")
        assert result.exit_code == 1, result.output
        assert "no data for" in result.output, result.output
        assert "public.ideas" in result.output, result.output
        with psycopg.connect(url) as conn:
            assert table_fingerprints(conn) == before


# -- restore runs no SQL from the archive, and replaces the data in one transaction ---------------------------
def patched(data: bytes, old: bytes, new: bytes) -> bytes:
    """The archive with one statement of its table of contents (stored uncompressed) replaced by another
    of the same length, as someone editing a backup file would."""
    assert data.count(old) == 1, old
    assert len(new) <= len(old), (new, len(new), len(old))
    return data.replace(old, new.ljust(len(old)))


DELETED_ACCOUNTS_COPY = (
    b"COPY private.deleted_accounts (email_sha256, free_expansions_remaining, deleted_at) FROM stdin;"
)


def role_exists(url: str, role: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is not None


def test_a_backup_carrying_sql_is_refused_and_none_of_it_runs(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    url, file, _ = backed_up
    data = file.read_bytes()
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
    role = f"ie9_pwned_{secrets.token_hex(3)}"
    variants = {
        # passes in any database whose name starts with ie_r (the old scratch check), fails anywhere else
        "select": b"SELECT 1/(current_database()~'^ie_r')::int;   COPY private.deleted_accounts FROM stdin;",
        "create-role": f"CREATE ROLE {role}; COPY private.deleted_accounts FROM stdin;".encode(),
        "second-line": b"COPY private.deleted_accounts (email_sha256) FROM stdin;\nSELECT pg_sleep(0);\n--",
    }
    try:
        for name, statement in variants.items():
            result = restore_variant(url, patched(data, DELETED_ACCOUNTS_COPY, statement), tmp_path, f"{name}.dump")
            with psycopg.connect(url) as conn:
                assert table_fingerprints(conn) == before, f"{name}: the database changed: {result.output}"
            assert not role_exists(url, role), f"{name}: the archive's CREATE ROLE ran"
            assert result.exit_code == 1, f"{name}: restored: {result.output}"
            assert "nothing was changed" in result.output, result.output
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def test_a_backup_whose_tables_or_columns_differ_is_refused(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    url, file, _ = backed_up
    data = file.read_bytes()
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
    ideas_copy = data[data.index(b"COPY public.ideas (") :].split(b"\n", 1)[0]
    variants = {
        "renamed-column": (DELETED_ACCOUNTS_COPY, DELETED_ACCOUNTS_COPY.replace(b"deleted_at", b"deleted_ax")),
        "dropped-column": (DELETED_ACCOUNTS_COPY, DELETED_ACCOUNTS_COPY.replace(b", deleted_at", b"")),
        "repeated-column": (
            DELETED_ACCOUNTS_COPY,
            DELETED_ACCOUNTS_COPY.replace(b"free_expansions_remaining", b"email_sha256"),
        ),
        "unknown-table": (DELETED_ACCOUNTS_COPY, DELETED_ACCOUNTS_COPY.replace(b"accounts", b"accountz")),
        "duplicate-table": (ideas_copy, ideas_copy.replace(b"public.ideas", b"public.users")),
        "other-schema": (ideas_copy, ideas_copy.replace(b"public.ideas", b"pg_temp.ide")),
    }
    for name, (old, new) in variants.items():
        result = restore_variant(url, patched(data, old, new), tmp_path, f"{name}.dump")
        with psycopg.connect(url) as conn:
            assert table_fingerprints(conn) == before, f"{name}: the database changed: {result.output}"
        assert result.exit_code == 1, f"{name}: restored: {result.output}"
        assert "nothing was changed" in result.output, result.output


def test_the_backup_script_parser_accepts_only_what_pg_dump_writes(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    from idea_expansion.local.maintenance import _parse_script

    url, file, content = backed_up
    pg_restore = _tool("pg_restore", url)
    script = subprocess.run([pg_restore, "--data-only", "--file=-", str(file)], capture_output=True, check=True).stdout
    lines = script.split(b"\n")

    def parse(text: bytes) -> Any:
        with tempfile.TemporaryFile() as handle:
            handle.write(text)
            handle.seek(0)
            return _parse_script(handle)

    parsed = parse(script)
    assert sorted(t.table for t in parsed.tables) == sorted(maintenance.BACKUP_TABLES)
    for table in parsed.tables:
        if table.table in content:  # all but private.deleted_accounts
            assert table.rows == content[table.table][0], table.table

    copy_users = next(i for i, line in enumerate(lines) if line.startswith(b"COPY public.users "))
    end_users = lines.index(b"\\.", copy_users)
    first_set = next(i for i, line in enumerate(lines) if line.startswith(b"SET "))
    last_data = max(i for i, line in enumerate(lines) if line == b"\\.")

    def insert(at: int, line: bytes) -> bytes:
        return b"\n".join([*lines[:at], line, *lines[at:]])

    restrict = next((line for line in lines if line.startswith(b"\\restrict ")), None)
    runs = "a statement restore does not run"
    refused = {
        "a statement before the data": (insert(first_set, b"CREATE ROLE pwned;"), runs),
        "a statement between tables": (insert(end_users + 1, b"SELECT 1;"), runs),
        "a lower-case statement": (insert(end_users + 1, b"copy public.users (id) from program 'id';"), runs),
        "a statement after the data": (insert(last_data + 1, b"DROP TABLE public.users;"), runs),
        "trailing garbage": (script + b"garbage\n", "more follows the end" if restrict else runs),
        "an unlisted setting": (insert(first_set, b"SET role = postgres;"), "a setting restore does not accept"),
        "a setting with a statement": (insert(first_set, b"SET lock_timeout = 0; SELECT 1;"), "does not accept"),
        "another search path": (
            insert(first_set, b"SELECT pg_catalog.set_config('search_path', 'public', false);"),
            "does not accept",
        ),
        "a setting among the data": (insert(end_users + 1, b"SET client_encoding = 'LATIN1';"), "after the data"),
        "data cut short": (b"\n".join(lines[: end_users - 1]), "the data of public.users has no end"),
        "a row cut short": (b"\n".join(lines[: copy_users + 2]), "the data of public.users has no end"),
        "no end of data": (b"\n".join(lines[:last_data]), "has no end"),
        "a table twice": (insert(end_users + 1, b"COPY public.users (id) FROM stdin;\n\\."), "a second copy"),
        "a foreign table": (insert(end_users + 1, b"COPY public.secrets (id) FROM stdin;\n\\."), "not one of the"),
        "a quoted table": (insert(end_users + 1, b'COPY "public"."users" (id) FROM stdin;\n\\.'), runs),
        "a column twice": (insert(end_users + 1, b"COPY public.ideas (id, id) FROM stdin;\n\\."), "named twice"),
        "a table missing": (b"\n".join([*lines[:copy_users], *lines[end_users + 1 :]]), "no data for public.users"),
        "no encoding": (b"\n".join(line for line in lines if b"client_encoding" not in line), "which encoding"),
        "invalid utf-8": (insert(first_set, b"SET client_encoding = '\xff';"), "not UTF-8"),
        "empty": (b"", "no data for"),
    }
    if restrict:
        refused |= {
            "a second restrict": (insert(first_set, restrict), "only the script's first line"),
            "a setting before the restrict": (b"SET lock_timeout = 0;\n" + script, "only the script's first line"),
            "an unrestrict that differs": (
                script.replace(b"\\unrestrict ", b"\\unrestrict x"),
                "without the matching",
            ),
            "no unrestrict": (
                b"\n".join(line for line in lines if not line.startswith(b"\\unrestrict")),
                "the script has no end",
            ),
        }
    for name, (text, reason) in refused.items():
        with pytest.raises(DatabaseSetupError) as raised:
            parse(text)
        assert reason in str(raised.value), f"{name}: {raised.value}"
        assert len(str(raised.value)) < 400, f"{name}: the message echoes the input"


def strip_racers(url: str) -> None:
    """Remove the rows the racing writers added (their users and the usage rows the trigger made)."""
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("set local session_replication_role = replica")
        conn.execute(
            "delete from public.usage_tracking where user_id in "
            "(select id from public.users where email like 'racer-%%')"
        )
        conn.execute("delete from public.users where email like 'racer-%%'")


def test_a_concurrent_writer_never_interleaves_with_a_restore(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    import threading

    url, file, content = backed_up
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
        clash = conn.execute("select email from public.users where email like 'bulk-%%' limit 1").fetchone()
    assert clash is not None
    stop = threading.Event()
    written: list[str] = []
    attempts = [0]

    def race(email_of: Any) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("set role service_role")
            n = 0
            while not stop.is_set():
                n += 1
                email = email_of(n)
                try:
                    conn.execute("insert into public.users (email) values (%s)", (email,))
                except psycopg.Error:
                    pass  # a clash, or the table being replaced
                else:
                    written.append(email)
                attempts[0] += 1

    racers = [
        threading.Thread(target=race, args=(lambda n: clash[0],)),  # an address the backup holds
        threading.Thread(target=race, args=(lambda n: f"racer-{threading.get_ident()}-{n}@example.test",)),
    ]
    for racer in racers:
        racer.start()
    try:
        for _attempt in range(3):
            before_attempts = attempts[0]
            result = run("db", "restore", str(file), "--db-url", url, "--yes")
            assert attempts[0] > before_attempts, "the writers did not run during the restore"
            stop_at = len(written)
            if result.exit_code == 0:
                break
            assert "nothing was changed" in result.output, result.output
    finally:
        stop.set()
        for racer in racers:
            racer.join()
    assert clash[0] not in written, "a writer added an address the backup holds while the restore ran"
    print(f"\nrestore under {attempts[0]} concurrent writes ({stop_at} kept): exit {result.exit_code}")
    strip_racers(url)
    with psycopg.connect(url) as conn:
        after = table_fingerprints(conn)
    if result.exit_code == 0:
        assert after == content, "restored, but not exactly the backup's rows (plus writes made after it)"
    else:
        assert after == before


def catalog(url: str) -> list[tuple[Any, ...]]:
    """The application's relations by OID, the migration history and disabled triggers: a restore that
    rolled back leaves all of it as it was (a rebuilt schema has new OIDs)."""
    with psycopg.connect(url) as conn:
        return [
            *conn.execute(
                "select c.oid::int, n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname in ('public', 'private') order by 1"
            ),
            *conn.execute("select version from supabase_migrations.schema_migrations order by 1"),
            *conn.execute("select tgrelid::regclass::text, tgname from pg_trigger where tgenabled = 'D' order by 1, 2"),
        ]


def test_a_backup_that_fails_to_load_rolls_back_everything(
    backed_up: tuple[str, Path, dict[str, tuple[int, str]]], tmp_path: Path, fresh_database: Any, project: Any
) -> None:
    """Each backup here reads and parses; it fails only after the schema was dropped, rebuilt and partly
    loaded, inside the restore's transaction."""
    url, file, content = backed_up
    with psycopg.connect(url) as conn:
        before = table_fingerprints(conn)
    schema_before = catalog(url)
    from idea_expansion.local import reset

    sources = {
        # a row whose user does not exist (foreign keys are not checked while triggers are off)
        "orphan": "set session_replication_role = replica; "
        "insert into public.ideas (user_id, title) values (gen_random_uuid(), 'orphan')",
        # two users with one address: the unique index fails half-way through the load
        "duplicate": "alter table public.users drop constraint users_email_key; "
        "insert into public.users (email) values ('twice@example.test'), ('twice@example.test')",
        # a backup of a schema with a column fewer
        "column": "alter table public.ideas drop column priority_score cascade",
    }
    for name, statements in sources.items():
        source = fresh_database("ie_src")
        with psycopg.connect(source, autocommit=True) as conn:
            reset(conn, project, seed=False)
            conn.execute("insert into public.users (email) values ('someone@example.test')")
            conn.execute(statements)
        dump = tmp_path / f"{name}.dump"
        backup(source, dump)
        result = run("db", "restore", str(dump), "--db-url", url, "--yes")
        with psycopg.connect(url) as conn:
            assert table_fingerprints(conn) == before, f"{name}: the data changed: {result.output}"
        assert catalog(url) == schema_before, f"{name}: the schema was rebuilt: {result.output}"
        assert result.exit_code == 1, f"{name}: restored: {result.output}"
        assert "nothing was changed" in result.output, result.output
    restored = run("db", "restore", str(file), "--db-url", url, "--yes")
    assert restored.exit_code == 0, restored.output
    with psycopg.connect(url) as conn:
        assert table_fingerprints(conn) == content
        disabled = conn.execute("select count(*) from pg_trigger where tgenabled = 'D'").fetchone()
    assert disabled == (0,)
