#!/usr/bin/env bash
# The Supabase-native checks, against a fresh bootstrapped database on this machine's PostgreSQL 15:
# the real Supabase CLI (db reset twice, db advisors, db lint, migration list) and pgTAP via pg_prove.
# Needs Debian/Ubuntu with PostgreSQL 15 running (CI machines have it) and Node.js with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BASE="${CHECK_PG_BASE:-postgresql://postgres@127.0.0.1:5432}"
DB_NAME="${CHECK_DB_NAME:-ie_supabase_check}"
SUPABASE_CLI_VERSION=2.117.0
DB_URL="$PG_BASE/$DB_NAME"
CLI_DB_URL="$DB_URL?sslmode=disable"   # the local server speaks no TLS; the CLI would insist otherwise

step() { printf '\n== %s\n' "$*"; }

step "Debian packages: pgTAP, pg_prove, plpgsql_check"
missing=()
for pkg in postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl postgresql-15-plpgsql-check; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
echo "installed: postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl postgresql-15-plpgsql-check"

step "Supabase CLI $SUPABASE_CLI_VERSION"
SUPABASE=.tools/node_modules/.bin/supabase
if [ ! -x "$SUPABASE" ] || [ "$("$SUPABASE" --version)" != "$SUPABASE_CLI_VERSION" ]; then
  mkdir -p .tools
  (cd .tools && npm i -E --no-audit --no-fund --loglevel=error "supabase@$SUPABASE_CLI_VERSION")
fi
"$SUPABASE" --version

step "fresh database $DB_NAME, Supabase-compatibility bootstrap"
psql "$PG_BASE/postgres" -v ON_ERROR_STOP=1 -q \
  -c "drop database if exists $DB_NAME with (force)" -c "create database $DB_NAME"
.venv/bin/idea-expansion db bootstrap --db-url "$DB_URL"

step "supabase db reset (1/2)"
"$SUPABASE" db reset --db-url "$CLI_DB_URL" --yes
step "supabase db reset (2/2)"
"$SUPABASE" db reset --db-url "$CLI_DB_URL" --yes

step "supabase db advisors (all levels, for the record)"
"$SUPABASE" db advisors --db-url "$CLI_DB_URL" --level info
step "supabase db advisors --fail-on warn"
"$SUPABASE" db advisors --db-url "$CLI_DB_URL" --fail-on warn

step "supabase db lint --fail-on error"
"$SUPABASE" db lint --db-url "$CLI_DB_URL" --fail-on error

step "supabase migration list"
"$SUPABASE" migration list --db-url "$CLI_DB_URL"
files=$(find supabase/migrations -name '*.sql' | wc -l)
applied=$(psql "$DB_URL" -Atc "select count(*) from supabase_migrations.schema_migrations")
echo "migration files: $files, applied: $applied"
[ "$files" -eq "$applied" ] || { echo "not every migration is applied"; exit 1; }

step "pgTAP: pg_prove supabase/tests"
pg_prove --dbname "$DB_NAME" --host 127.0.0.1 --username postgres supabase/tests/*.test.sql

psql "$PG_BASE/postgres" -q -c "drop database if exists $DB_NAME with (force)"
step "Supabase-native checks passed"
