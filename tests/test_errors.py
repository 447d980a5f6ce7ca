"""The error tree is closed: nothing the SDK raises to a caller is outside `IdeaExpansionError`.

The renamed connection errors (and their deprecated aliases, which must neither shadow Python's builtins
nor go silent), the pipeline's errors at the top level without importing the pipeline, the local store's
file-system failures, and the pipeline's public methods given bad input.
"""

from __future__ import annotations

import ast
import builtins
import errno
import importlib
import inspect
import os
import pickle
import pkgutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import idea_expansion
from idea_expansion import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConfigurationError,
    IdeaExpansion,
    IdeaExpansionError,
    InvalidRequestError,
    NotFoundError,
    OutputFormat,
    Settings,
    StorageError,
    _exceptions,
)
from idea_expansion._jwt import JwksKeys
from idea_expansion.backends._base import Scope

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "idea_expansion"
RENAMED = {"ConnectionError": APIConnectionError, "TimeoutError": APITimeoutError}
PIPELINE_ERRORS = ["ProviderError", "PublishError", "WorkerProcessError", "WorkerThreadError", "PipelineError"]


# -- the renamed errors and their deprecated aliases --------------------------------------------------
@pytest.mark.parametrize("module", [idea_expansion, _exceptions], ids=["idea_expansion", "_exceptions"])
@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_name_is_the_new_class_and_warns_naming_it(module: Any, old: str) -> None:
    new = RENAMED[old]
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*use idea_expansion\.{new.__name__}") as seen:
        alias = getattr(module, old)
    assert alias is new
    # The warning points at the code that read the name (here), so that its author can find it.
    assert [Path(w.filename) for w in seen] == [Path(__file__)]


def test_the_from_import_of_an_old_name_warns_where_it_is_written() -> None:
    with pytest.warns(DeprecationWarning, match="APITimeoutError") as seen:
        from idea_expansion import TimeoutError as OldTimeout
    assert OldTimeout is APITimeoutError
    # The import system looks the name up twice in a package (once to see whether it is a submodule):
    # two warnings from the same line, which the default filter shows once.
    assert {Path(w.filename) for w in seen} == {Path(__file__)}


def test_except_with_an_old_name_still_catches_what_the_sdk_raises() -> None:
    # A real raise site: the JWKS fetch from a port nothing listens on (connection refused).
    keys = JwksKeys(url="http://127.0.0.1:9/auth/v1/.well-known/jwks.json", timeout=5)
    with pytest.warns(DeprecationWarning, match="APIConnectionError"):
        old_connection_error = idea_expansion.ConnectionError
    with pytest.raises(old_connection_error, match="cannot fetch the JWKS") as raised:
        keys.key("some-kid", "RS256")
    assert type(raised.value) is APIConnectionError
    with pytest.warns(DeprecationWarning, match="APITimeoutError"):
        old_timeout_error = idea_expansion.TimeoutError
    with pytest.raises(old_timeout_error):
        raise APITimeoutError("the database did not answer in time")
    # openai-python's shape: a timeout is a kind of connection error, so one `except` retries both.
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIConnectionError, IdeaExpansionError)
    assert not issubclass(APIConnectionError, builtins.ConnectionError)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and not a deprecation warning either
        with pytest.raises(AttributeError, match="no attribute 'NoSuchError'"):
            _ = idea_expansion.NoSuchError
        with pytest.raises(AttributeError, match="no attribute 'NoSuchError'"):
            _ = _exceptions.NoSuchError
        assert not hasattr(idea_expansion, "pipeline_errors")


@pytest.mark.parametrize("module", ["idea_expansion", "idea_expansion._exceptions"])
def test_a_star_import_rebinds_no_builtin(module: str) -> None:
    imported = importlib.import_module(module)
    shadowing = sorted(set(imported.__all__) & set(dir(builtins)))
    assert not shadowing, f"{module}.__all__ shadows builtins: {shadowing}"
    namespace: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the star import reads no deprecated name
        exec(f"from {module} import *\nseen = (ConnectionError, TimeoutError)", namespace)
    assert namespace["seen"] == (builtins.ConnectionError, builtins.TimeoutError)


def _old_names_read(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Where a module imports an old name from the package, or reads it as an attribute of it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("idea_expansion")):
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name in RENAMED)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("idea_expansion", "_exceptions")
            and node.attr in RENAMED
        ):
            yield node.lineno, node.attr


def test_no_module_of_the_sdk_uses_the_old_names() -> None:
    """Inside the package the old names would be the builtins (or, imported, a warning at every import)."""
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {name}"
        for path in sorted(SRC.rglob("*.py"))
        for line, name in _old_names_read(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders
    # The check itself finds what it looks for.
    assert list(_old_names_read(ast.parse("from .._exceptions import APIError, TimeoutError"))) == [(1, "TimeoutError")]


# -- one tree, exported at the top level ----------------------------------------------------------------
def _package_modules() -> Iterator[str]:
    yield "idea_expansion"
    for info in pkgutil.walk_packages([str(SRC)], prefix="idea_expansion."):
        if not info.name.endswith(".__main__"):  # importing it runs the CLI
            yield info.name


def test_every_exception_class_of_the_package_is_in_the_tree_and_exported() -> None:
    found: dict[str, type[BaseException]] = {}
    for name in _package_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("idea_expansion"):
                found[obj.__qualname__] = obj
    assert "WorkerProcessError" in found, "the walk found too little"
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, IdeaExpansionError))
    assert not outside, f"raised outside the tree: {outside}"
    unexported = sorted(
        name
        for name, cls in found.items()
        if not name.startswith("_") and getattr(idea_expansion, name, None) is not cls
    )
    assert not unexported, f"not exported from idea_expansion: {unexported}"


def test_the_pipeline_errors_are_the_top_level_ones() -> None:
    from idea_expansion import pipeline
    from idea_expansion.pipeline import github, providers

    assert pipeline.ProviderError is providers.ProviderError is idea_expansion.ProviderError
    assert pipeline.PublishError is github.PublishError is idea_expansion.PublishError
    assert pipeline.WorkerProcessError is idea_expansion.WorkerProcessError
    assert pipeline.WorkerThreadError is idea_expansion.WorkerThreadError
    for name in PIPELINE_ERRORS:
        assert name in idea_expansion.__all__, name


def test_the_pipeline_errors_are_exported_without_importing_the_pipeline() -> None:
    script = (
        "import sys, warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import idea_expansion\n"
        "from idea_expansion import *\n"
        f"errors = [getattr(idea_expansion, name) for name in {PIPELINE_ERRORS!r}]\n"
        "assert all(issubclass(e, idea_expansion.IdeaExpansionError) for e in errors)\n"
        "try:\n"
        "    raise ProviderError('the model answered off-schema')\n"
        "except IdeaExpansionError:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('idea_expansion.pipeline')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _one_of_each() -> list[IdeaExpansionError]:
    """An instance of every error class in the tree, with every attribute it carries set."""
    errors: list[IdeaExpansionError] = [
        _exceptions.PipelineError("failed at judge", execution_id=uuid.uuid4(), stage="judge"),
        _exceptions.PublishError("GitHub said no", status=422, errors=[{"resource": "Repository", "field": "name"}]),
        _exceptions.WorkerProcessError("a worker died", processed=3, exit_codes={1: -9}),
    ]
    for name in _exceptions.__all__:
        cls = getattr(_exceptions, name)
        if not isinstance(cls, type) or not issubclass(cls, IdeaExpansionError) or any(type(e) is cls for e in errors):
            continue
        if issubclass(cls, APIError):
            errors.append(cls("refused", code="PT402", details="d", hint="h", raw={"code": "PT402"}))
        else:
            errors.append(cls("it failed"))
    return errors


def test_every_error_survives_pickling_with_its_attributes() -> None:
    """A worker process, or a task queue, sends errors pickled: a required keyword argument made
    PipelineError and WorkerProcessError impossible to unpickle."""
    errors = _one_of_each()
    assert {type(e) for e in errors} >= {getattr(_exceptions, name) for name in PIPELINE_ERRORS}
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (copy.args, str(copy), vars(copy)) == (error.args, str(error), vars(error))


# -- the local store: what the file system refuses is a StorageError ----------------------------------------
@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def store(database_url: str, encryption_key: str, store_root: Path) -> Iterator[IdeaExpansion]:
    settings = Settings(_env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=encryption_key)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres", storage_dir=store_root) as client:
        yield client


def _user(client: IdeaExpansion) -> uuid.UUID:
    return client.users.create(email=f"err-{uuid.uuid4().hex[:10]}@example.test").id


def _rows(client: IdeaExpansion, user: uuid.UUID) -> dict[str, int]:
    """The user's objects, as their rows say: name -> size."""
    rows = client.backend.query(  # type: ignore[attr-defined]
        "select name, (metadata ->> 'size')::int as size from storage.objects where bucket_id = 'images' "
        "and name like %s",
        (f"{user}/%",),
        Scope("service_role"),
    )
    return {row["name"]: row["size"] for row in rows}


def _staged(root: Path) -> list[Path]:
    staging = root / ".staging"
    return list(staging.iterdir()) if staging.is_dir() else []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through any permission bits")
def test_an_unwritable_storage_folder_is_a_storage_error(store: IdeaExpansion, store_root: Path) -> None:
    user = _user(store)
    store_root.mkdir()
    store_root.chmod(0o500)
    try:
        with pytest.raises(StorageError, match=rf"could not store '{user}/card.png' in {store_root}") as raised:
            store.for_user(user).storage.upload(f"{user}/card.png", b"\x89PNG")
    finally:
        store_root.chmod(0o700)
    assert isinstance(raised.value.__cause__, PermissionError)
    assert _rows(store, user) == {}


def test_a_storage_root_that_is_not_a_folder_is_a_storage_error(
    store: IdeaExpansion, store_root: Path, tmp_path: Path
) -> None:
    user = _user(store)
    me = store.for_user(user).storage
    path = f"{user}/card.png"
    me.upload(path, b"\x89PNG kept")
    store_root.rename(tmp_path / "moved-away")
    store_root.write_bytes(b"a file where the storage folder was")

    with pytest.raises(StorageError, match=f"could not store '{user}/other.png'") as raised:
        me.upload(f"{user}/other.png", b"\x89PNG")
    assert isinstance(raised.value.__cause__, OSError)
    with pytest.raises(StorageError, match=f"could not read '{path}'") as raised:
        me.download(path)
    assert isinstance(raised.value.__cause__, NotADirectoryError)
    with pytest.raises(StorageError, match=f"could not remove '{path}'"):
        me.remove(path)
    # Nothing was written, and the failed remove deleted nothing: the row still names the kept file.
    assert _rows(store, user) == {path: len(b"\x89PNG kept")}


def test_an_object_cannot_be_a_folder_of_objects_in_the_local_store(store: IdeaExpansion, store_root: Path) -> None:
    """Supabase Storage keys objects by name; files cannot be both a file and a folder. Such an upload
    committed its row, then leaked the file system's OSError and left the row without its file."""
    user = _user(store)
    me = store.for_user(user).storage
    me.upload(f"{user}/a.png", b"\x89PNG a")
    with pytest.raises(StorageError, match=f"cannot store '{user}/a.png/b.png': '{user}/a.png' is an object"):
        me.upload(f"{user}/a.png/b.png", b"\x89PNG b")
    me.upload(f"{user}/run/c.png", b"\x89PNG c")
    with pytest.raises(StorageError, match=f"cannot store '{user}/run': it is a folder"):
        me.upload(f"{user}/run", b"\x89PNG run")
    with pytest.raises(NotFoundError):
        me.download(f"{user}/run")
    assert _rows(store, user) == {f"{user}/a.png": 6, f"{user}/run/c.png": 6}
    assert me.download(f"{user}/a.png") == b"\x89PNG a"
    assert _staged(store_root) == []


def test_a_file_that_cannot_take_its_name_puts_its_row_back(
    store: IdeaExpansion, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step of an upload, after the row is committed, fails (a full disk, say): the caller gets
    a StorageError and the row is as it was, for a new object and for a replaced one."""
    user = _user(store)
    me = store.for_user(user).storage
    me.upload(f"{user}/old.png", b"\x89PNG old")
    real_replace = os.replace

    def disk_full(source: Any, target: Any, **kwargs: Any) -> None:
        if Path(target).is_relative_to(store_root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StorageError, match=f"could not store '{user}/new.png'.*No space left") as raised:
        me.upload(f"{user}/new.png", b"\x89PNG new")
    assert raised.value.details == "OSError"
    with pytest.raises(StorageError, match="No space left"):
        me.upload(f"{user}/old.png", b"\x89PNG a much longer replacement", upsert=True)
    monkeypatch.undo()

    assert _rows(store, user) == {f"{user}/old.png": len(b"\x89PNG old")}
    assert me.download(f"{user}/old.png") == b"\x89PNG old"
    with pytest.raises(NotFoundError):
        me.download(f"{user}/new.png")
    assert _staged(store_root) == []


# -- the pipeline's public methods, given bad input -------------------------------------------------------
@pytest.fixture
def pipeline(client: IdeaExpansion) -> Iterator[Any]:
    from idea_expansion.pipeline import OfflineProvider, Pipeline

    with Pipeline(client, provider=OfflineProvider()) as made:
        yield made


def test_an_unknown_format_names_the_formats_and_holds_nothing(client: IdeaExpansion, pipeline: Any) -> None:
    user = _user(client)
    client.for_user(user).ideas.create(title="A CLI that explains regexes")
    for run in (pipeline.expand, pipeline.enqueue):
        with pytest.raises(InvalidRequestError) as raised:
            run(user, format="video")
        assert all(f"'{fmt.value}'" in str(raised.value) for fmt in OutputFormat), str(raised.value)
    usage = client.credits.balance(user)
    assert (usage.free_expansions_remaining, usage.total_expansions_used) == (5, 0)
    assert list(client.executions.list(user_id=user)) == []


BAD_PIPELINE_CALLS: dict[str, Callable[[Any], object]] = {
    "expand: user id": lambda p: p.expand("not-a-uuid"),
    "expand: format": lambda p: p.expand(uuid.uuid4(), format=5),
    "expand: idea id": lambda p: p.expand(uuid.uuid4(), idea_id=3.5),
    "expand: public": lambda p: p.expand(uuid.uuid4(), public="maybe"),
    "expand: idempotency key": lambda p: p.expand(uuid.uuid4(), idempotency_key=[]),
    "enqueue: user id": lambda p: p.enqueue(None),
    "status": lambda p: p.status("x"),
    "reap": lambda p: p.reap("an hour"),
    "publish": lambda p: p.publish("x"),
    "deliver": lambda p: p.deliver(object()),
    "run_worker: concurrency": lambda p: p.run_worker(concurrency="2", exit_when_idle=True),
    "run_worker: threads": lambda p: p.run_worker(threads_per_process=1.5, exit_when_idle=True),
    "run_worker: max_runs": lambda p: p.run_worker(max_runs="3", exit_when_idle=True),
    "run_worker: poll_interval": lambda p: p.run_worker(poll_interval="soon", exit_when_idle=True),
    "run_worker: poll_interval nan": lambda p: p.run_worker(poll_interval=float("nan"), exit_when_idle=True),
    "Pipeline: heartbeat_every": lambda p: type(p)(p._client, heartbeat_every="a minute"),
    "Pipeline: stale_after": lambda p: type(p)(p._client, stale_after=-1),
}


@pytest.mark.parametrize("call", list(BAD_PIPELINE_CALLS.values()), ids=list(BAD_PIPELINE_CALLS))
def test_bad_input_to_the_pipeline_is_an_invalid_request(pipeline: Any, call: Callable[[Any], object]) -> None:
    # A TypeError (comparing "2" with 1) escaped run_worker; a bad heartbeat period failed every run
    # mid-way, each after holding a credit.
    with pytest.raises(InvalidRequestError):
        call(pipeline)


def test_an_empty_provider_chain_is_a_configuration_error() -> None:
    from idea_expansion.pipeline import FallbackProvider

    with pytest.raises(ConfigurationError, match="at least one provider"):
        FallbackProvider([])


def test_time_zones_that_are_not_files_are_invalid_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the tzdata package installed, ZoneInfo opens the name as a resource: a very long name is an
    OSError ("File name too long"), not a ValueError. Such names are refused first, and any OSError
    from the lookup is an unknown time zone."""
    import zoneinfo

    from idea_expansion.types.params import UserCreate, parse_params

    with pytest.raises(InvalidRequestError, match="at most 64 characters"):
        parse_params(UserCreate, email="tz@example.com", timezone="Europe/" + "x" * 300)

    def unreadable(key: str) -> zoneinfo.ZoneInfo:
        raise OSError(errno.ENAMETOOLONG, "File name too long", key)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", unreadable)
    with pytest.raises(InvalidRequestError, match="unknown time zone"):
        parse_params(UserCreate, email="tz@example.com", timezone="Europe/Paris")
