#!/usr/bin/env bash
# A plain install works: build the wheel, install it WITHOUT extras into a brand-new virtualenv, and run
# scripts/smoke_install.py there against the machine's PostgreSQL (DATABASE_URL) and a stand-in Supabase API
# on loopback (SUPABASE_URL). Everything lives in a temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_URL="${SMOKE_SERVER_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
PYTHON="${PYTHON:-$(.venv/bin/python -c 'import sys; print(sys.executable)')}"
WORK="$(mktemp -d -t ie-wheel-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/dist" .
wheel=("$WORK"/dist/idea_expansion-*.whl)
echo "built ${wheel[0]##*/}"

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheel[0]}"
"$WORK/venv/bin/python" -m pip check

# From the temporary folder, so that nothing of the checkout is importable or found.
cp scripts/smoke_install.py "$WORK/"
(cd "$WORK" && "$WORK/venv/bin/python" smoke_install.py "$SERVER_URL")
