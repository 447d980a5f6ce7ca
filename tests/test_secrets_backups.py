"""Stored secrets and backups (issue 9): key rotation that finishes, envelope parsing that only ever raises
`DecryptionError`, a validation status users cannot set, restores that never destroy first, private backup files."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from typer.testing import CliRunner, Result

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
from idea_expansion.cli import app
from idea_expansion.local import maintenance
from idea_expansion.local.maintenance import _read_archive, _tool, backup, table_fingerprints

from ._db import Db

USER = uuid.uuid4()


def legacy_encrypt(key: bytes, plaintext: str) -> str:
    """The original app's format: 16-byte IV, no AAD."""
    iv = secrets.token_bytes(16)
    sealed = AESGCM(key).encrypt(iv, plaintext.encode(), None)
    return json.dumps({"ciphertext": sealed[:-16].hex(), "iv": iv.hex(), "authTag": sealed[-16:].hex()})


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "DATABASE_URL", "IDEA_EXPANSION_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDEA_EXPANSION_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)  # no .env of the checkout


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


def scratch_databases(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select datname from pg_database where datname like 'ie_restore_check_%%'")]


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
    scratch_before = scratch_databases(url)
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
    assert scratch_databases(url) == scratch_before
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
