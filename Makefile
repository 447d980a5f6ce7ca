# The two commands a fresh machine needs: `make demo` and `make test`. Each creates .venv, installs the
# package with its extras and provides a database (the embedded one unless DATABASE_URL /
# TEST_DATABASE_URL point elsewhere).

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck layers check check-supabase smoke-install lowest-versions bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (python3.11, python3.12, ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,llm,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/idea-expansion demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# Layers import one way (cli -> pipeline -> client -> resources -> backends): the contracts in pyproject.toml.
layers: $(STAMP)
	$(BIN)/lint-imports

check: lint typecheck layers

# Supabase's own tools against a fresh database on the machine's PostgreSQL 15 (see scripts/check-supabase.sh).
check-supabase: $(STAMP)
	bash scripts/check-supabase.sh

# A plain install: the wheel, without extras, in a brand-new virtualenv, against the machine's PostgreSQL and a
# stand-in Supabase API on loopback (see scripts/smoke-install.sh).
smoke-install: $(STAMP)
	bash scripts/smoke-install.sh

# The suite on the lowest versions pyproject.toml allows, against the machine's PostgreSQL (scripts/lowest-versions.sh).
lowest-versions: $(STAMP)
	bash scripts/lowest-versions.sh

# Every benchmark beside its baseline, repeated, one table of medians (benchmarks/README.md).
# BENCH_ARGS passes options, e.g. `make bench BENCH_ARGS="--quick --only charge"`.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .tools
