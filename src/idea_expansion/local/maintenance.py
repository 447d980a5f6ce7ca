"""Database maintenance behind `idea-expansion db ...`: the doctor's checks, backup and restore,
clearing data, and the guide's helper queries. These run over a direct superuser (or `postgres`)
connection, like the Supabase CLI's own database commands."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from .._exceptions import ConfigurationError, DatabaseSetupError
from .compat import database_kind, read_sql
from .embedded import embedded_module
from .migrations import migration_status, reset
from .project import SupabaseProject

__all__ = [
    "APP_TABLES",
    "BACKUP_TABLES",
    "Check",
    "CheckStatus",
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
# public function -> roles that must (and must alone) be able to execute it, in every signature it has. By name:
# a migration that changes a function's arguments changes no line here (the migration history check
# tells a database with the old version), and a stale overload left behind is checked too.
EXPECTED_FUNCTIONS = {
    "check_user_has_credits": {"authenticated", "service_role"},
    "consume_expansion_credit": {"service_role"},
    "add_paid_credits": {"service_role"},
    "start_expansion": {"service_role"},
    "claim_next_expansion": {"service_role"},
    "record_expansion_stage": {"service_role"},
    "record_expansion_evaluation": {"service_role"},
    "finish_expansion": {"service_role"},
    "record_expansion_delivery": {"service_role"},
    "reap_stale_expansions": {"service_role"},
    "expansion_status": {"authenticated", "service_role"},
    "refund_payment": {"service_role"},
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
# The tables a Supabase client watches for live progress (20260101002700_realtime_publication.sql).
REALTIME_PUBLICATION = "supabase_realtime"
REALTIME_TABLES = ("executions", "outputs")

CheckStatus = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    """One doctor check: what was checked, its outcome, what was found and how to fix it.

    `status` is "pass", "fail", or "skip" (the check does not apply to this database, e.g. the Realtime
    publication on a database that is not Supabase's); only "fail" makes the doctor fail."""

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""

    @property
    def passed(self) -> bool:
        """The check ran and passed."""
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        """The check ran and failed."""
        return self.status == "fail"


def doctor(conn: psycopg.Connection[Any], project: SupabaseProject) -> list[Check]:
    """The guide's troubleshooting steps as checks. Never raises for a failed check.

    A check of objects the migrations make fails when they are missing, so an empty or half-migrated
    database fails (a table that does not exist never "has row-level security")."""
    checks: list[Check] = []

    def check(name: str, fix: str, probe: Callable[[], tuple[bool | Literal["skip"], str]]) -> None:
        status: CheckStatus
        try:
            outcome, detail = probe()
            status = "skip" if outcome == "skip" else "pass" if outcome else "fail"
        except psycopg.Error as exc:
            status, detail = "fail", f"query failed: {exc.diag.message_primary or exc}"
        checks.append(Check(name, status, detail, fix if status == "fail" else ""))

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
        rows = conn.execute(
            "select c.relname, c.relrowsecurity from pg_class c "
            "where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') order by c.relname"
        ).fetchall()
        present = {str(name) for name, _ in rows}
        # RLS of a table that does not exist is not "enabled": no tables here is a failure, not a pass.
        missing = [t for t in APP_TABLES if t not in present]
        off = [str(name) for name, secured in rows if not secured]
        problems = []
        if missing:
            problems.append(f"no such table to protect: {', '.join(missing)}")
        if off:
            problems.append(f"RLS disabled on: {', '.join(off)}")
        if problems:
            return False, "; ".join(problems)
        return True, f"enabled on every public table ({len(rows)})"

    check(
        "row-level security",
        "apply the migrations (db migrate); a table left open: alter table public.<table> enable row level security",
        rls,
    )

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
        for name, allowed in EXPECTED_FUNCTIONS.items():
            signatures = [
                (int(r[0]), str(r[1]))
                for r in conn.execute(
                    "select p.oid, p.oid::regprocedure::text from pg_catalog.pg_proc p "
                    "where p.pronamespace = 'public'::regnamespace and p.proname = %s order by 2",
                    (name,),
                )
            ]
            if not signatures:
                problems.append(f"{name} missing")
            for oid, signature in signatures:
                for role in _ROLES:
                    can = conn.execute("select has_function_privilege(%s, %s::oid, 'execute')", (role, oid)).fetchone()
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
            shipped = len(status.applied) + len(status.pending)
            if not status.applied and not status.unknown:
                parts.append(f"no migrations applied: the database is empty ({shipped} shipped)")
            elif status.pending:
                parts.append(f"half-migrated: {len(status.applied)} of {shipped} migrations applied")
            if status.pending:
                parts.append("pending: " + ", ".join(m.version for m in status.pending))
            if status.unknown:
                parts.append("applied without a file here: " + ", ".join(status.unknown))
            return False, "; ".join(parts)
        return True, f"{len(status.applied)} migrations applied, matching the files"

    check("migration history", "idea-expansion db migrate (pending) or update this checkout (unknown)", history)

    def realtime() -> tuple[bool | Literal["skip"], str]:
        publication = conn.execute(
            "select puballtables, pubinsert, pubupdate from pg_catalog.pg_publication where pubname = %s",
            (REALTIME_PUBLICATION,),
        ).fetchone()
        if publication is None:
            if database_kind(conn) != "supabase":
                return (
                    "skip",
                    f"not a Supabase database: no {REALTIME_PUBLICATION} publication (live progress needs Realtime)",
                )
            return False, f"this Supabase database has no {REALTIME_PUBLICATION} publication"
        published = {
            str(r[0])
            for r in conn.execute(
                "select tablename from pg_catalog.pg_publication_tables "
                "where pubname = %s and schemaname = 'public' and tablename = any(%s)",
                (REALTIME_PUBLICATION, list(REALTIME_TABLES)),
            )
        }
        problems = [f"public.{t} is not in {REALTIME_PUBLICATION}" for t in REALTIME_TABLES if t not in published]
        problems += [
            f"{REALTIME_PUBLICATION} does not publish {what}s"
            for what, on in (("insert", publication[1]), ("update", publication[2]))
            if not on
        ]
        if problems:
            return False, "; ".join(problems)
        how = " (a publication for all tables)" if publication[0] else ""
        return True, f"public.executions and public.outputs are in {REALTIME_PUBLICATION}{how}"

    check(
        "realtime publication",
        f"apply the migrations (db migrate); for a publication made after they ran: "
        f"alter publication {REALTIME_PUBLICATION} add table public.<the missing table>",
        realtime,
    )
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
    """Replace every row of the database with the backup's: rebuild the schema from this checkout's
    migrations (no seed) and load the backup's rows, in ONE transaction. Needs a superuser (triggers
    are disabled while loading, so nothing is created twice) and an autocommit `conn` that is not
    inside a transaction.

    No SQL from the file is ever run. pg_restore only turns the archive into its data-only script
    (into a private temporary file); that script is parsed, and it must hold nothing but the settings
    pg_dump writes and, for each table a backup holds, exactly one `COPY schema.table (columns) FROM
    stdin;` with its rows. Restore then runs its own `COPY` for each table, with the table's columns
    checked against the rebuilt schema, and checks every foreign key before committing.

    A truncated, corrupted, edited or foreign file, rows the schema rejects, or any other failure
    raises `DatabaseSetupError` and leaves the database exactly as it was (the rollback undoes the
    rebuild too). Other sessions wait for the restore's locks and then see the restored data (or fail).
    """
    if not path.is_file():
        raise DatabaseSetupError(f"no backup file at {path}")
    if database_kind(conn) == "supabase":
        raise DatabaseSetupError(
            "restore rebuilds the schema and disables triggers, which a Supabase database does not allow; "
            "restore Supabase projects from the dashboard (Database -> Backups)"
        )
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise DatabaseSetupError("restore runs its own transaction: pass a connection that is not inside one")
    superuser = conn.execute("select current_setting('is_superuser')").fetchone()
    if superuser is None or superuser[0] != "on":
        raise DatabaseSetupError("restore needs a superuser connection (it rebuilds the schema and disables triggers)")
    pg_restore = _tool("pg_restore", url)
    # The script holds every row in clear (password hashes, ciphertexts): a private file, unlinked.
    with tempfile.TemporaryFile() as script_file:
        try:
            _read_archive([pg_restore, "--data-only", "--file=-", str(path)], "reading the backup", into=script_file)
            script = _parse_script(script_file)
        except DatabaseSetupError as exc:
            raise DatabaseSetupError(f"{exc}; nothing was changed") from None
        _replace_data(conn, project, script_file, script)


# What a backup holds (see _DATA).
BACKUP_TABLES = (*(f"public.{t}" for t in APP_TABLES), "private.deleted_accounts", "auth.users", "storage.objects")


@dataclass(frozen=True)
class _TableData:
    """One table's rows in the script: COPY text format, `start`..`end` bytes of the script file."""

    table: str
    columns: tuple[str, ...]
    start: int
    end: int
    rows: int


@dataclass(frozen=True)
class _Script:
    tables: tuple[_TableData, ...]
    client_encoding: str


# What pg_dump writes before the data (pg_restore --data-only --file=-): these settings, the empty
# search path, and (15.14+, 18+) the \restrict ... \unrestrict pair. Nothing of it is executed: only
# the client encoding is used, to read the rows as they were written.
_SETTINGS = frozenset(
    {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "transaction_timeout",
        "client_encoding",
        "standard_conforming_strings",
        "check_function_bodies",
        "xmloption",
        "client_min_messages",
        "row_security",
        "default_tablespace",
        "default_table_access_method",
    }
)
_SET = re.compile(r"SET ([a-z_]+) = ('[A-Za-z0-9_ -]*'|[A-Za-z0-9_]+);")
_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"
_RESTRICT = re.compile(r"\\(restrict|unrestrict) ([A-Za-z0-9]{1,256})")
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
_COPY = re.compile(rf"COPY ([a-z_]+)\.([a-z_]+) \(({_IDENT}(?:, {_IDENT})*)\) FROM stdin;")
_COLUMN = re.compile(_IDENT)


def _parse_script(script: BinaryIO) -> _Script:
    """Read pg_restore's data-only script and accept only what a backup's script holds (see
    `_SETTINGS`; one COPY per table of `BACKUP_TABLES`, its rows, `\\.`). Raises `DatabaseSetupError`."""

    def refuse(line_number: int, reason: str) -> DatabaseSetupError:
        return DatabaseSetupError(f"the backup is not one restore can load: line {line_number}: {reason}")

    script.seek(0)
    tables: dict[str, _TableData] = {}
    encoding = ""
    restrict: str | None = None
    unrestricted = False
    statements = 0
    offset = 0
    line_number = 0
    copying: tuple[str, tuple[str, ...], int, int, int] | None = None  # table, columns, start, line, rows
    for raw in iter(script.readline, b""):
        line_number += 1
        start, offset = offset, offset + len(raw)
        if copying is not None:
            if raw.rstrip(b"\n") == b"\\.":
                table, columns, data_start, _, rows = copying
                tables[table] = _TableData(table, columns, data_start, start, rows)
                copying = None
            elif not raw.endswith(b"\n"):
                break  # a row cut short: reported below as data without its end
            else:
                copying = (*copying[:4], copying[4] + 1)
            continue
        if not raw.strip() or raw.startswith(b"--"):
            continue
        if unrestricted:
            raise refuse(line_number, "more follows the end of the script")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(line_number, "a line that is not UTF-8 text") from None
        if not line.endswith("\n"):
            raise refuse(line_number, "the script is cut short")
        line = line[:-1]
        statements += 1
        if match := _RESTRICT.fullmatch(line):
            if match.group(1) == "restrict":
                if restrict is not None or statements > 1:
                    raise refuse(line_number, "\\restrict where only the script's first line has it")
                restrict = match.group(2)
            elif match.group(2) != restrict:
                raise refuse(line_number, "\\unrestrict without the matching \\restrict")
            else:
                unrestricted = True
            continue
        if line.startswith("SET ") or line.startswith("SELECT pg_catalog.set_config("):
            if tables:
                raise refuse(line_number, "a setting after the data began")
            if line == _SEARCH_PATH:
                continue
            setting = _SET.fullmatch(line)
            if setting is None or setting.group(1) not in _SETTINGS:
                raise refuse(line_number, f"a setting restore does not accept: {line[:60]!r}")
            if setting.group(1) == "client_encoding":
                encoding = setting.group(2).strip("'")
            continue
        if (copy := _COPY.fullmatch(line)) is None:
            raise refuse(line_number, f"a statement restore does not run: {line[:60]!r}")
        table = f"{copy.group(1)}.{copy.group(2)}"
        if table not in BACKUP_TABLES:
            raise refuse(line_number, f"data for {table[:130]}, which is not one of the application's tables")
        if table in tables:
            raise refuse(line_number, f"a second copy of the data of {table}")
        columns = tuple(
            name[1:-1].replace('""', '"') if name.startswith('"') else name for name in _COLUMN.findall(copy.group(3))
        )
        if len(set(columns)) != len(columns):
            raise refuse(line_number, f"a column named twice in the data of {table}")
        copying = (table, columns, offset, line_number, 0)
    if copying is not None:
        raise refuse(copying[3], f"the data of {copying[0]} has no end (the backup is truncated)")
    if restrict is not None and not unrestricted:
        raise refuse(line_number, "the script has no end (the backup is truncated)")
    missing = [t for t in BACKUP_TABLES if t not in tables]
    if missing:
        raise DatabaseSetupError(
            f"the backup has no data for {', '.join(missing)}: it is not a complete idea-expansion backup"
        )
    if not encoding:
        raise DatabaseSetupError("the backup does not say which encoding its rows are in")
    return _Script(tuple(sorted(tables.values(), key=lambda t: t.start)), encoding)


def _replace_data(conn: psycopg.Connection[Any], project: SupabaseProject, file: BinaryIO, script: _Script) -> None:
    """Lock, drop, migrate and load in one transaction: on any error it rolls back, and the database
    (schema, history and rows) is exactly as it was."""
    committing = False
    try:
        with conn.transaction():
            # Writers that hold the tables finish first; later ones wait for the commit. A writer that
            # deadlocks with the restore is the one the server cancels (it checks after 1s by default).
            conn.execute("set local deadlock_timeout = '30s'")
            present = [
                str(r[0])
                for r in conn.execute(
                    "select t from unnest(%s::text[]) with ordinality u(t, i) where to_regclass(t) is not null "
                    "order by i",
                    (list(BACKUP_TABLES),),
                )
            ]
            if present:
                conn.execute(
                    sql.SQL("lock table {} in access exclusive mode").format(
                        sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in present)
                    )
                )
            reset(conn, project, seed=False)  # each migration a savepoint of this transaction
            conn.execute("delete from storage.objects")
            conn.execute("select pg_catalog.set_config('client_encoding', %s, true)", (script.client_encoding,))
            for table in script.tables:
                _load_table(conn, file, table)
            _check_foreign_keys(conn)
            committing = True
    except (DatabaseSetupError, psycopg.Error) as exc:
        if committing:
            raise DatabaseSetupError(f"committing the restore failed: {_message(exc)}; check the database") from exc
        raise DatabaseSetupError(f"{_message(exc)}; nothing was changed") from exc


def _message(exc: Exception) -> str:
    if isinstance(exc, psycopg.Error):
        return str(exc.diag.message_primary or exc)
    return str(exc)


def _load_table(conn: psycopg.Connection[Any], file: BinaryIO, table: _TableData) -> None:
    schema, name = table.table.split(".")
    relation = sql.Identifier(schema, name)
    real = [
        str(r[0])
        for r in conn.execute(
            "select attname from pg_catalog.pg_attribute where attrelid = %s::regclass and attnum > 0 "
            "and not attisdropped and attgenerated = '' order by attnum",
            (table.table,),
        )
    ]
    if set(real) != set(table.columns):
        missing = [c for c in real if c not in table.columns]
        unknown = [c for c in table.columns if c not in real]
        raise DatabaseSetupError(
            f"the backup's columns of {table.table} are not this checkout's: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)[:200]}" if missing else "",
                    f"unknown {', '.join(unknown)[:200]}" if unknown else "",
                )
                if part
            )
        )
    statement = sql.SQL("copy {} ({}) from stdin").format(
        relation, sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    )
    conn.execute(sql.SQL("alter table {} disable trigger all").format(relation))
    try:
        with conn.cursor() as cursor:
            with cursor.copy(statement) as copy:
                file.seek(table.start)
                remaining = table.end - table.start
                while remaining > 0:
                    chunk = file.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise DatabaseSetupError(f"the data of {table.table} could not be read back")
                    copy.write(chunk)
                    remaining -= len(chunk)
            loaded = cursor.rowcount
    except psycopg.Error as exc:
        raise DatabaseSetupError(f"loading {table.table} failed: {_message(exc)}") from exc
    if loaded != table.rows:
        raise DatabaseSetupError(f"loading {table.table} took {loaded} rows of the backup's {table.rows}")
    conn.execute(sql.SQL("alter table {} enable trigger all").format(relation))


def _check_foreign_keys(conn: psycopg.Connection[Any]) -> None:
    """Triggers were off while loading, so foreign keys were not checked: check each now."""
    for schema, table, name, ref_schema, referenced, columns, ref_columns in conn.execute(
        """
        select n.nspname, t.relname, c.conname, rn.nspname, r.relname,
               array(select a.attname from unnest(c.conkey) k join pg_catalog.pg_attribute a
                       on a.attrelid = c.conrelid and a.attnum = k order by array_position(c.conkey, k)),
               array(select a.attname from unnest(c.confkey) k join pg_catalog.pg_attribute a
                       on a.attrelid = c.confrelid and a.attnum = k order by array_position(c.confkey, k))
          from pg_catalog.pg_constraint c
          join pg_catalog.pg_class t on t.oid = c.conrelid join pg_catalog.pg_namespace n on n.oid = t.relnamespace
          join pg_catalog.pg_class r on r.oid = c.confrelid join pg_catalog.pg_namespace rn on rn.oid = r.relnamespace
         where c.contype = 'f'
           and exists (select 1 from unnest(%s::text[]) u where to_regclass(u) in (c.conrelid, c.confrelid))
         order by 1, 2, 3
        """,
        (list(BACKUP_TABLES),),
    ).fetchall():
        query = sql.SQL("select count(*) from {} t where {} and not exists (select 1 from {} r where {})").format(
            sql.Identifier(schema, table),
            sql.SQL(" and ").join(sql.SQL("t.{} is not null").format(sql.Identifier(c)) for c in columns),
            sql.Identifier(ref_schema, referenced),
            sql.SQL(" and ").join(
                sql.SQL("r.{} = t.{}").format(sql.Identifier(rc), sql.Identifier(c))
                for c, rc in zip(columns, ref_columns, strict=True)
            ),
        )
        row = conn.execute(query).fetchone()
        if row is not None and row[0]:
            raise DatabaseSetupError(
                f"the backup's rows break foreign key {name} of {schema}.{table}: "
                f"{row[0]} row(s) refer to no row of {ref_schema}.{referenced}"
            )


# How long pg_restore may go without writing a byte while it reads an archive. Some corrupt
# compressed blocks make pg_restore (18, at least) spin forever instead of failing.
_STALL_SECONDS = 60.0


def _read_archive(command: list[str], what: str, *, keep: bool = False, into: BinaryIO | None = None) -> str:
    """Run pg_restore writing to stdout and drain it (returned when `keep`, written to `into` when
    given); a run that writes nothing for `_STALL_SECONDS` is stopped and counts as a failure."""
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
                    if into is not None:
                        into.write(chunk)
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
