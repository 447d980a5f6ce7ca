"""Database maintenance behind `idea-expansion db ...`: the doctor's checks, backup and restore,
clearing data, and the guide's helper queries. These run over a direct superuser (or `postgres`)
connection, like the Supabase CLI's own database commands."""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .._exceptions import ConfigurationError, DatabaseSetupError
from .compat import database_kind, read_sql
from .embedded import embedded_module
from .migrations import migration_status, reset
from .project import SupabaseProject

__all__ = [
    "APP_TABLES",
    "Check",
    "backup",
    "complete_reset",
    "doctor",
    "foreign_key_report",
    "reset_data",
    "restore",
    "table_fingerprints",
]

APP_TABLES = (
    "users",
    "ideas",
    "credentials",
    "executions",
    "outputs",
    "blog_posts",
    "usage_tracking",
    "payment_receipts",
    "credit_charges",
)
EXPECTED_POLICIES: dict[str, set[str]] = {
    "users": {"Users can view their own profile", "Users can update their own profile"},
    "ideas": {
        "Users can view their own ideas",
        "Users can create their own ideas",
        "Users can update their own ideas",
        "Users can delete their own ideas",
    },
    "credentials": {
        "Users can view their own credentials",
        "Users can create their own credentials",
        "Users can update their own credentials",
        "Users can delete their own credentials",
    },
    "executions": {"Users can view their own executions"},
    "outputs": {"Users can view their own outputs"},
    "blog_posts": {
        "Anyone can view public blog posts",
        "Users can view their own and public blog posts",
        "Users can update their own blog posts",
        "Users can delete their own blog posts",
    },
    "usage_tracking": {"Users can view their own usage"},
    "payment_receipts": {"Users can view their own payment receipts"},
    "credit_charges": {"Users can view their own credit charges"},
}
STORAGE_POLICIES = {
    "Users can view their own images",
    "Users can upload images to their own folder",
    "Users can update their own images",
    "Users can delete their own images",
}
# function signature -> roles that must (and must alone) be able to execute it
EXPECTED_FUNCTIONS = {
    "check_user_has_credits(uuid)": {"authenticated", "service_role"},
    "consume_expansion_credit(uuid,uuid)": {"service_role"},
    "add_paid_credits(uuid,integer,numeric,text,text,text)": {"service_role"},
    "start_expansion(uuid,uuid,text,uuid,boolean,boolean)": {"service_role"},
    "claim_next_expansion(text)": {"service_role"},
    "record_expansion_stage(uuid,text)": {"service_role"},
    "record_expansion_evaluation(uuid,integer,text)": {"service_role"},
    "finish_expansion(uuid,text,integer,integer,text,text,text,jsonb,text,text)": {"service_role"},
    "record_expansion_delivery(uuid,text,text,text,jsonb)": {"service_role"},
    "reap_stale_expansions(interval)": {"service_role"},
    "expansion_status(uuid)": {"authenticated", "service_role"},
    "refund_payment(uuid,text)": {"service_role"},
}
EXPECTED_TRIGGERS = {
    ("public", "users", "users_set_updated_at"),
    ("public", "users", "users_create_usage"),
    ("public", "users", "users_keep_financial_rows"),
    ("public", "ideas", "ideas_set_updated_at"),
    ("public", "ideas", "ideas_status_transition"),
    ("public", "ideas", "ideas_guard_delete_in_flight"),
    ("public", "ideas", "ideas_guard_archive_in_flight"),
    ("public", "executions", "executions_status_transition"),
    ("public", "credentials", "credentials_set_updated_at"),
    ("public", "credentials", "credentials_guard_validation_status"),
    ("public", "blog_posts", "blog_posts_set_updated_at"),
    ("public", "usage_tracking", "usage_tracking_set_updated_at"),
    ("auth", "users", "on_auth_user_created"),
    ("auth", "users", "on_auth_user_email_changed"),
    ("auth", "users", "on_auth_user_deleted"),
}
_ROLES = ("anon", "authenticated", "service_role")


@dataclass(frozen=True)
class Check:
    """One doctor check: what was checked, whether it passed, what was found and how to fix it."""

    name: str
    passed: bool
    detail: str
    fix: str = ""


def doctor(conn: psycopg.Connection[Any], project: SupabaseProject) -> list[Check]:
    """The guide's troubleshooting steps as checks. Never raises for a failed check."""
    checks: list[Check] = []

    def check(name: str, fix: str, probe: Callable[[], tuple[bool, str]]) -> None:
        try:
            passed, detail = probe()
        except psycopg.Error as exc:
            passed, detail = False, f"query failed: {exc.diag.message_primary or exc}"
        checks.append(Check(name, passed, detail, "" if passed else fix))

    def connection() -> tuple[bool, str]:
        row = conn.execute("select current_setting('server_version'), current_user, current_database()").fetchone()
        assert row is not None
        return True, f"PostgreSQL {row[0]} as {row[1]} on {row[2]} ({database_kind(conn)})"

    check("connection", "check DATABASE_URL / --db-url and that the server is running", connection)

    def tables() -> tuple[bool, str]:
        present = {
            r[0]
            for r in conn.execute(
                "select tablename from pg_tables where schemaname = 'public' and tablename = any(%s)",
                (list(APP_TABLES),),
            )
        }
        missing = [t for t in APP_TABLES if t not in present]
        return not missing, f"missing: {', '.join(missing)}" if missing else f"all {len(APP_TABLES)} present"

    check("tables", "apply the migrations: idea-expansion db migrate (or db reset)", tables)

    def rls() -> tuple[bool, str]:
        off = [
            r[0]
            for r in conn.execute(
                "select c.relname from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' "
                "and not c.relrowsecurity"
            )
        ]
        return not off, f"RLS disabled on: {', '.join(off)}" if off else "enabled on every public table"

    check("row-level security", "alter table public.<table> enable row level security (or db reset)", rls)

    def policies() -> tuple[bool, str]:
        found: dict[str, set[str]] = {}
        for schema, table, name in conn.execute(
            "select schemaname, tablename, policyname from pg_policies where schemaname in ('public', 'storage')"
        ):
            found.setdefault(f"{schema}.{table}", set()).add(name)
        missing = [
            f"{table}: {name}"
            for table, names in EXPECTED_POLICIES.items()
            for name in sorted(names - found.get(f"public.{table}", set()))
        ]
        return not missing, "missing " + "; ".join(missing) if missing else "all expected policies present"

    check("policies", "re-create the missing policy from supabase/migrations (or db reset)", policies)

    def functions() -> tuple[bool, str]:
        problems = []
        for signature, allowed in EXPECTED_FUNCTIONS.items():
            name, args = signature.split("(")
            oid_row = conn.execute("select to_regprocedure(%s)", (f"public.{name}({args}",)).fetchone()
            if oid_row is None or oid_row[0] is None:
                problems.append(f"{signature} missing")
                continue
            for role in _ROLES:
                can = conn.execute(
                    "select has_function_privilege(%s, %s, 'execute')", (role, f"public.{name}({args}")
                ).fetchone()
                if can is not None and bool(can[0]) != (role in allowed):
                    problems.append(f"{signature}: {role} {'can' if can[0] else 'cannot'} execute")
        ok = not problems
        return ok, "; ".join(problems) if problems else f"{len(EXPECTED_FUNCTIONS)} functions, grants as expected"

    check("credit and pipeline functions", "re-apply the function's migration (grants follow each function)", functions)

    def triggers() -> tuple[bool, str]:
        present = {
            (r[0], r[1], r[2])
            for r in conn.execute(
                "select n.nspname, c.relname, t.tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid "
                "join pg_namespace n on n.oid = c.relnamespace where not t.tgisinternal"
            )
        }
        missing = sorted(f"{s}.{t}: {n}" for s, t, n in EXPECTED_TRIGGERS - present)
        return not missing, "missing " + "; ".join(missing) if missing else f"all {len(EXPECTED_TRIGGERS)} present"

    check("triggers", "re-apply the migrations (db reset)", triggers)

    def bucket() -> tuple[bool, str]:
        row = conn.execute("select public from storage.buckets where id = 'images'").fetchone()
        if row is None:
            return False, "the images bucket does not exist"
        found = {
            r[0]
            for r in conn.execute(
                "select policyname from pg_policies where schemaname = 'storage' and tablename = 'objects'"
            )
        }
        missing = sorted(STORAGE_POLICIES - found)
        if missing:
            return False, "missing storage policies: " + "; ".join(missing)
        return True, f"images bucket ({'public' if row[0] else 'private'}) with its 4 owner-folder policies"

    check("storage", "apply supabase/migrations/*_storage_images.sql (db reset)", bucket)

    def history() -> tuple[bool, str]:
        status = migration_status(conn, project)
        if status.pending or status.unknown:
            parts = []
            if status.pending:
                parts.append("pending: " + ", ".join(m.version for m in status.pending))
            if status.unknown:
                parts.append("applied without a file here: " + ", ".join(status.unknown))
            return False, "; ".join(parts)
        return True, f"{len(status.applied)} migrations applied, matching the files"

    check("migration history", "idea-expansion db migrate (pending) or update this checkout (unknown)", history)
    return checks


def reset_data(conn: psycopg.Connection[Any], *, admin_email: str, free: int = 5, paid: int = 95) -> None:
    """Delete all data but keep the schema and the admin user, who is left with `free` + `paid` credits."""
    with conn.transaction():
        conn.execute("delete from public.users where email <> %s", (admin_email,))
        for table in ("executions", "ideas", "credentials", "payment_receipts", "credit_charges"):
            conn.execute(f"delete from public.{table}")  # names are constants
        conn.execute("delete from storage.objects where bucket_id = 'images'")
        conn.execute("delete from private.deleted_accounts")  # what deleted addresses had left: data too
        row = conn.execute("select id from public.users where email = %s", (admin_email,)).fetchone()
        if row is None:
            row = conn.execute(
                "insert into public.users (email, name) values (%s, 'Admin') returning id", (admin_email,)
            ).fetchone()
        assert row is not None
        conn.execute(
            "update public.usage_tracking set free_expansions_remaining = %s, paid_credits_remaining = %s, "
            "total_expansions_used = 0, total_free_used = 0, total_paid_used = 0 where user_id = %s",
            (free, paid, row[0]),
        )


def complete_reset(conn: psycopg.Connection[Any]) -> None:
    """Drop everything the migrations created: public objects, every policy, the images bucket and the
    migration history. Roles and the Supabase schemas stay. `db migrate` or `db reset` rebuilds."""
    with conn.transaction():
        conn.execute(read_sql("drop_user_objects.sql"))
        conn.execute("delete from storage.objects where bucket_id = 'images'")
        conn.execute("delete from storage.buckets where id = 'images'")


def foreign_key_report(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, int]]:
    """Every foreign key in public: (table, constraint, referenced table, orphaned rows). Orphans should
    be 0; the database enforces it, so a non-zero count means a constraint was disabled or bypassed."""
    report = []
    for table, name, referenced, columns, ref_columns in conn.execute(
        """
        select c.conrelid::regclass::text, c.conname, c.confrelid::regclass::text,
               array(select a.attname from unnest(c.conkey) k join pg_attribute a
                       on a.attrelid = c.conrelid and a.attnum = k order by array_position(c.conkey, k)),
               array(select a.attname from unnest(c.confkey) k join pg_attribute a
                       on a.attrelid = c.confrelid and a.attnum = k order by array_position(c.confkey, k))
          from pg_constraint c
         where c.contype = 'f' and c.connamespace = 'public'::regnamespace
         order by 1, 2
        """
    ).fetchall():
        join = " and ".join(f'r."{rc}" = t."{c}"' for c, rc in zip(columns, ref_columns, strict=True))
        not_null = " and ".join(f't."{c}" is not null' for c in columns)
        orphans = f"select count(*) from {table} t where {not_null} "
        row = conn.execute(orphans + f"and not exists (select 1 from {referenced} r where {join})").fetchone()
        report.append((table, name, referenced, int(row[0]) if row else 0))
    return report


# -- backup and restore -----------------------------------------------------------------------------------
# private.deleted_accounts: what a re-signup with a deleted account's address starts with (money records).
_DATA = ("--table=public.*", "--table=private.deleted_accounts", "--table=auth.users", "--table=storage.objects")


def backup(url: str, path: Path) -> None:
    """Dump every row of the application's tables (and auth.users, storage.objects) to `path`
    (pg_dump custom format, compressed: each data block carries a checksum). The schema is not in the
    file: it is the migrations'.

    The file holds password hashes and credential ciphertexts, so it is private (mode 0600) from its
    first byte: the dump is written to a new 0600 file beside `path` and renamed over it when complete.
    A file already at `path` is replaced (whatever its permissions were), and kept if the dump fails.
    """
    if path.is_dir():
        raise DatabaseSetupError(f"{path} is a directory; name the backup file to write")
    pg_dump = _tool("pg_dump", url)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)  # mode 0600
    os.close(fd)
    try:
        _run(
            [
                pg_dump,
                "--format=custom",
                "--compress=6",
                "--data-only",
                "--no-owner",
                "--no-privileges",
                *_DATA,
                f"--file={partial}",
                f"--dbname={url}",
            ],
            "pg_dump",
        )
        os.chmod(partial, 0o600)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def restore(conn: psycopg.Connection[Any], url: str, project: SupabaseProject, path: Path) -> None:
    """Rebuild the database from this checkout's migrations (no seed), then load the backup's rows.
    Needs a superuser (triggers are disabled while loading, so nothing is created twice) and an
    autocommit `conn`.

    Nothing is dropped or emptied until the whole archive has been read and verified: it must list
    the data of every application table, every data block must read and decompress, and it must load
    completely into a scratch database built from the same migrations (created beside the target and
    dropped again). A truncated, corrupted or foreign file raises `DatabaseSetupError` and leaves the
    database exactly as it was.
    """
    if not path.is_file():
        raise DatabaseSetupError(f"no backup file at {path}")
    if database_kind(conn) == "supabase":
        raise DatabaseSetupError(
            "restore rebuilds the schema and disables triggers, which a Supabase database does not allow; "
            "restore Supabase projects from the dashboard (Database -> Backups)"
        )
    pg_restore = _tool("pg_restore", url)
    try:
        _verify_backup(conn, url, project, path, pg_restore)
    except DatabaseSetupError as exc:
        raise DatabaseSetupError(f"{exc}; nothing was changed") from None
    reset(conn, project, seed=False)
    conn.execute("delete from storage.objects")
    _run(_load_command(pg_restore, url, path), "pg_restore")


def _load_command(pg_restore: str, url: str, path: Path) -> list[str]:
    return [
        pg_restore,
        "--data-only",
        "--disable-triggers",
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
        f"--dbname={url}",
        str(path),
    ]


_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ", re.MULTILINE)


def _verify_backup(
    conn: psycopg.Connection[Any], url: str, project: SupabaseProject, path: Path, pg_restore: str
) -> None:
    """Read the whole archive without touching the target. Cheapest checks first."""
    # 1. The table of contents: readable, and naming the data of every table a backup holds. (A
    #    damaged header can make pg_restore read an empty list, and then "restore" nothing.)
    listing = _read_archive([pg_restore, "--list", str(path)], "reading the backup", keep=True)
    present = {f"{schema}.{table}" for schema, table in _TABLE_DATA.findall(listing)}
    expected = [f"public.{t}" for t in APP_TABLES] + ["auth.users", "storage.objects"]
    missing = [t for t in expected if t not in present]
    if missing:
        raise DatabaseSetupError(
            f"the backup has no data for {', '.join(missing)}: it is not a complete idea-expansion backup"
        )
    # 2. Every data block, read and decompressed (a truncated file ends early; zlib checks each block).
    _read_archive([pg_restore, "--file=-", str(path)], "reading the backup")
    # 3. A real load, in one transaction, into a scratch database made by the same migrations.
    scratch = f"ie_restore_check_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
    except psycopg.Error as exc:
        raise DatabaseSetupError(
            f"restore checks the backup in a scratch database first, and could not create one: "
            f"{exc.diag.message_primary or exc}"
        ) from None
    try:
        scratch_url = make_conninfo(url, dbname=scratch)
        with psycopg.connect(scratch_url, autocommit=True) as scratch_conn:
            reset(scratch_conn, project, seed=False)
        _run(_load_command(pg_restore, scratch_url, path), "loading the backup into a scratch database")
    finally:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(scratch)))


# How long pg_restore may go without writing a byte while it reads an archive. Some corrupt
# compressed blocks make pg_restore (18, at least) spin forever instead of failing.
_STALL_SECONDS = 60.0


def _read_archive(command: list[str], what: str, *, keep: bool = False) -> str:
    """Run pg_restore writing to stdout and drain it (returned when `keep`); a run that writes nothing
    for `_STALL_SECONDS` is stopped and counts as a failure."""
    kept: list[bytes] = []
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                while True:
                    if not selector.select(timeout=_STALL_SECONDS):
                        raise DatabaseSetupError(
                            f"{what} failed: pg_restore stopped making progress (the archive is corrupt)"
                        )
                    chunk = os.read(process.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break
                    if keep:
                        kept.append(chunk)
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
        if returncode != 0:
            errors.seek(0)
            lines = [line for line in errors.read().decode("utf-8", "replace").strip().splitlines() if line]
            raise DatabaseSetupError(f"{what} failed: {lines[-1] if lines else 'exit code ' + str(returncode)}")
    return b"".join(kept).decode("utf-8", "replace")


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def table_fingerprints(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of every row, per table, for comparing a database before and after."""
    tables = [f"public.{t}" for t in APP_TABLES] + ["auth.users", "storage.objects"]
    result = {}
    for table in tables:
        row = conn.execute(
            f"select count(*), coalesce(md5(string_agg(t::text, ',' order by t::text)), '') from {table} t"
        ).fetchone()
        assert row is not None
        result[table] = (int(row[0]), str(row[1]))
    return result


def _server_major(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.info.server_version) // 10000


def _tool(name: str, url: str) -> str:
    """The `name` closest to the server's major version and not older (the same major when there is
    one: a newer pg_dump writes settings, like transaction_timeout, an older server rejects). Looked
    for among the embedded server's binaries, Debian's /usr/lib/postgresql/<major>/bin and PATH."""
    needed = _server_major(url)
    candidates: list[str] = []
    try:
        module = embedded_module()
        candidates.append(str(Path(module.__file__).parent / "pginstall" / "bin" / name))
    except ConfigurationError:
        pass
    candidates.extend(sorted(map(str, Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), reverse=True))
    found = shutil.which(name)
    if found:
        candidates.append(found)
    best: tuple[int, str] | None = None
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        out = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if match and int(match.group(1)) >= needed and (best is None or int(match.group(1)) < best[0]):
            best = (int(match.group(1)), candidate)
    if best is None:
        raise DatabaseSetupError(
            f"{name} {needed} or newer is needed: install the PostgreSQL client tools "
            f"(apt-get install postgresql-client-{needed}) or pip install 'idea-expansion[local]'"
        )
    return best[1]


def _run(command: list[str], what: str) -> str:
    # Passwords in URLs stay out of the process list: libpq reads PGPASSWORD instead.
    env = dict(os.environ)
    for i, part in enumerate(command):
        if part.startswith("--dbname="):
            params = conninfo_to_dict(part.removeprefix("--dbname="))
            if params.get("password"):
                env["PGPASSWORD"] = str(params.pop("password"))
                command[i] = "--dbname=" + " ".join(f"{k}={v}" for k, v in params.items())
    # A damaged archive can make pg_restore print any bytes.
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", env=env, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line]
        raise DatabaseSetupError(f"{what} failed: {lines[-1] if lines else 'exit code ' + str(result.returncode)}")
    return result.stdout
