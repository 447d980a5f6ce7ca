#!/usr/bin/env bash
# The test suite on the lowest versions pyproject.toml allows: every direct dependency (and every extra's) at
# the lower bound of its range, so a bound that claims too much fails here instead of on a user's machine.
# uv resolves them (`--resolution lowest-direct`: our own dependencies at their floor, theirs as they resolve);
# both uv and the venv live under .tools/ (git-ignored), made fresh on every run. Needs the machine's
# PostgreSQL (TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
TOOLS=.tools/lowest-versions
PYTHON="${PYTHON:-$(.venv/bin/python -c 'import sys; print(sys.executable)')}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"

rm -rf "$TOOLS"
"$PYTHON" -m venv "$TOOLS/uv"
"$TOOLS/uv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
UV="$TOOLS/uv/bin/uv"

"$UV" venv --quiet --python "$PYTHON" "$TOOLS/venv"
"$UV" pip install --quiet --python "$TOOLS/venv/bin/python" --resolution lowest-direct -e '.[local,llm,dev]'

echo "direct dependencies as installed:"
"$TOOLS/venv/bin/python" - <<'PY'
import re
import tomllib
from importlib.metadata import version

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
for requirement in requirements:
    name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]
    print(f"  {name}=={version(name)}  ({requirement})")
PY

# The suite in a fixed order (the other CI steps shuffle it); -p no:cacheprovider leaves the checkout alone.
"$TOOLS/venv/bin/python" -m pytest -q -p no:cacheprovider -p no:randomly
