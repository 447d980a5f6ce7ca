"""Models cannot drift from the migrations; the public surface is consistent and documented; settings fail clearly."""

from __future__ import annotations

import inspect
import re
import sys
import tomllib
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import AwareDatetime, BaseModel

import idea_expansion
from idea_expansion import (
    BlogPost,
    ConfigurationError,
    Credential,
    CreditCharge,
    Execution,
    Idea,
    IdeaExpansion,
    Output,
    PaymentReceipt,
    Settings,
    Usage,
    User,
    generate_key,
)
from idea_expansion.local import SupabaseProject, reset

from ._db import Db

ROOT = Path(__file__).resolve().parent.parent

MODELS: dict[str, type[BaseModel]] = {
    "users": User,
    "ideas": Idea,
    "credentials": Credential,
    "executions": Execution,
    "outputs": Output,
    "blog_posts": BlogPost,
    "usage_tracking": Usage,
    "payment_receipts": PaymentReceipt,
    "credit_charges": CreditCharge,
}
# Columns deliberately kept out of a model.
HIDDEN = {("credentials", "encrypted_value")}

SQL_TYPES: dict[str, tuple[type, ...]] = {
    "uuid": (uuid.UUID,),
    "text": (str, StrEnum),
    "integer": (int,),
    "boolean": (bool,),
    "jsonb": (dict, list, BaseModel),  # a JSON object the SDK reads as a typed model (outputs.content)
    "numeric": (Decimal,),
    "timestamp with time zone": (AwareDatetime,),  # aware datetimes only
    "ARRAY": (list,),
}


def _python_types(annotation: Any) -> tuple[list[type], bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return [typing.get_origin(a) or a for a in inner], type(None) in args
    if typing.get_origin(annotation) is typing.Annotated:
        return _python_types(args[0])
    return [typing.get_origin(annotation) or annotation], False


@pytest.mark.parametrize("table", sorted(MODELS))
def test_model_matches_information_schema(db: Db, table: str) -> None:
    with db.admin() as conn:
        columns = conn.execute(
            "select column_name, data_type, is_nullable from information_schema.columns "
            "where table_schema = 'public' and table_name = %s",
            (table,),
        ).fetchall()
    model = MODELS[table]
    expected = {name for name, _, _ in columns if (table, name) not in HIDDEN}
    assert set(model.model_fields) == expected
    for name, data_type, nullable in columns:
        if (table, name) in HIDDEN:
            continue
        field = model.model_fields[name]
        python_types, optional = _python_types(field.annotation)
        assert optional == (nullable == "YES"), f"{table}.{name}: nullability"
        allowed = SQL_TYPES[data_type]
        assert all(issubclass(t, allowed) for t in python_types), f"{table}.{name}: {python_types} vs {data_type}"
        assert field.description, f"{table}.{name} has no docstring"


def _exported() -> dict[str, Any]:
    return {name: getattr(idea_expansion, name) for name in idea_expansion.__all__}


def _defined_here(obj: Any) -> bool:
    """A class or function defined inside the package (not a re-exported builtin or third-party name)."""
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.split(".")[0] == "idea_expansion"


def _own_doc(obj: Any) -> str:
    """The object's own docstring (a class does not count its base's)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return (doc or "").strip()


def test_public_surface_is_sorted_unique_and_importable() -> None:
    names = idea_expansion.__all__
    assert names == sorted(set(names)), "__all__ must be sorted and free of duplicates"
    missing = [name for name in names if not hasattr(idea_expansion, name)]
    assert not missing, f"__all__ names what the package does not define: {missing}"
    star: dict[str, Any] = {}
    exec("from idea_expansion import *", star)  # the star import is the thing under test
    assert set(star) - {"__builtins__"} == set(names)


def test_public_surface_exports_only_documented_package_objects() -> None:
    private = [name for name in idea_expansion.__all__ if name.startswith("_") and name != "__version__"]
    assert not private, f"private names exported: {private}"
    for name, obj in _exported().items():
        if name == "__version__":
            continue
        assert _defined_here(obj), f"{name} is not a class or function of idea_expansion: {obj!r}"
        assert _own_doc(obj), f"{name} has no docstring"
        # The exported object is the one its module defines, not a stale copy.
        assert getattr(sys.modules[obj.__module__], obj.__qualname__) is obj, name


def test_no_public_class_or_function_is_left_out_of_all() -> None:
    leaked = [
        name
        for name, obj in vars(idea_expansion).items()
        if not name.startswith("_") and _defined_here(obj) and name not in idea_expansion.__all__
    ]
    assert not leaked, f"public in the package namespace but not in __all__: {leaked}"


def test_types_of_public_model_fields_are_public() -> None:
    """Whoever reads an exported model can name the enums and models its fields hold."""

    def package_types(annotation: Any) -> Iterator[type]:
        if _defined_here(annotation):
            yield annotation
        for arg in typing.get_args(annotation):
            yield from package_types(arg)

    exported = set(_exported().values())
    for name, obj in _exported().items():
        if inspect.isclass(obj) and issubclass(obj, BaseModel):
            for field_name, field in obj.model_fields.items():
                for used in package_types(field.annotation):
                    assert used in exported, f"{name}.{field_name} holds {used.__qualname__}, which is not exported"


def test_version_is_the_projects() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        assert idea_expansion.__version__ == tomllib.load(file)["project"]["version"]


def test_every_error_is_exported_and_in_the_tree() -> None:
    from idea_expansion import _exceptions

    defined = {
        obj
        for obj in vars(_exceptions).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == _exceptions.__name__
    }
    assert defined, "no exception classes found"
    exported = {obj for obj in _exported().values() if inspect.isclass(obj) and issubclass(obj, BaseException)}
    assert defined == exported, (
        f"defined but not exported: {defined - exported}; exported from elsewhere: {exported - defined}"
    )
    for cls in defined:
        assert issubclass(cls, _exceptions.IdeaExpansionError), cls.__name__
        assert cls.__name__ in _exceptions.__all__, cls.__name__


def _api_error_classes() -> set[type[Exception]]:
    from idea_expansion import APIError

    found: set[type[Exception]] = set()
    pending = [APIError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_error_from_code_reaches_every_api_error_and_keeps_the_payload() -> None:
    from idea_expansion import APIError
    from idea_expansion._exceptions import _EXACT, _STORAGE_STATUS, error_from_code

    reached: set[type[Exception]] = set()
    for code in [*_EXACT, None, "XX000", "Unauthorized", "NoSuchBucket"]:
        for status in [None, *_STORAGE_STATUS, 500]:
            raw = {"code": code, "status": status}
            error = error_from_code(code, "the message", status=status, details="d", hint="the hint", raw=raw)
            assert isinstance(error, APIError), (code, status)
            payload = (error.code, error.message, error.details, error.hint, error.raw)
            assert payload == (code, "the message", "d", "the hint", raw), (code, status)
            assert "the message" in str(error), (code, status)
            assert "the hint" in str(error), (code, status)
            if code:
                assert code in str(error)
            reached.add(type(error))
    # No APIError subclass is dead: each one is what some code or Storage status maps to.
    assert reached == _api_error_classes()


def test_error_from_code_chooses_by_code_never_by_message() -> None:
    from idea_expansion import APIError
    from idea_expansion._exceptions import _EXACT, error_from_code

    misleading = ["", "m", "insufficient credits", "permission denied", "not found", "duplicate key", "PT402", "42501"]
    for code in [*_EXACT, "XX000", "22P02", None]:
        chosen = {type(error_from_code(code, message)) for message in misleading}
        assert len(chosen) == 1, f"{code}: the class depends on the message: {chosen}"
    # An exact code is always more specific than the generic APIError, and Storage's status only decides
    # when the code alone does not.
    for code in _EXACT:
        assert type(error_from_code(code, "m")) is not APIError, code
        assert type(error_from_code(code, "m", status=500)) is type(error_from_code(code, "m")), code


def test_sqlstate_classes_map_to_their_meaning() -> None:
    from idea_expansion import APIError, ConflictError, InvalidRequestError
    from idea_expansion._exceptions import error_from_code

    # Class 22 is "data exception": any bad input, including codes the table does not list.
    for code in ["22000", "22001", "22003", "22004", "22007", "22012", "22023", "22P02", "22P05"]:
        assert type(error_from_code(code, "m")) is InvalidRequestError, code
    # Class 23 is "integrity constraint violation": a unique or foreign-key clash is a conflict, a broken
    # CHECK or NOT NULL is bad input.
    for code in ["23505", "23503"]:
        assert type(error_from_code(code, "m")) is ConflictError, code
    for code in ["23514", "23502"]:
        assert type(error_from_code(code, "m")) is InvalidRequestError, code
    # A code nobody mapped stays the generic error rather than guessing.
    for code in ["XX000", "PT999", "", None]:
        assert type(error_from_code(code, "m")) is APIError, code


def test_the_databases_own_error_codes_each_have_a_specific_error() -> None:
    """Every custom code the migrations raise (PTxxx) reaches the caller as a specific APIError subclass."""
    from idea_expansion import APIError
    from idea_expansion._exceptions import error_from_code

    raised = {
        match
        for path in (ROOT / "supabase" / "migrations").glob("*.sql")
        for match in re.findall(r"errcode\s*=\s*'(PT\d{3})'", path.read_text())
    }
    assert raised, "the migrations raise no custom error codes"
    for code in sorted(raised):
        assert type(error_from_code(code, "m")) is not APIError, code


def test_storage_errors_follow_the_status() -> None:
    from idea_expansion import (
        AuthenticationError,
        InvalidRequestError,
        NotFoundError,
        PermissionDeniedError,
        StorageError,
    )
    from idea_expansion._exceptions import error_from_code

    # Storage reports an RLS refusal as Unauthorized/403: a permission error, not an authentication one.
    assert type(error_from_code("Unauthorized", "new row violates row-level security", status=403)) is (
        PermissionDeniedError
    )
    assert type(error_from_code("InvalidJWT", "m", status=401)) is AuthenticationError
    assert type(error_from_code("not_found", "m", status=404)) is NotFoundError
    assert type(error_from_code("EntityTooLarge", "m", status="413")) is InvalidRequestError
    # The status may come as text; it means the same.
    for status in [400, 401, 403, 404, 409, 413, 415, 500]:
        assert type(error_from_code("X", "m", status=status)) is type(error_from_code("X", "m", status=str(status)))
    for status in [500, 502, "not-a-number"]:
        assert type(error_from_code("X", "m", status=status)) is StorageError, status


def test_settings_read_standard_names_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", "http://127.0.0.1:54321")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-secret-value")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.supabase_url == "http://127.0.0.1:54321"
    assert "service-secret-value" not in repr(settings)
    assert settings.require("supabase_service_role_key") == "service-secret-value"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"IDEA_EXPANSION_BACKEND": "rest"}, "SUPABASE_URL is not set"),
        ({"IDEA_EXPANSION_BACKEND": "rest", "SUPABASE_URL": "http://x"}, "SUPABASE_SERVICE_ROLE_KEY is not set"),
    ],
)
def test_missing_settings_raise_configuration_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=fragment):
        IdeaExpansion(settings=Settings(_env_file=None))  # type: ignore[call-arg]


def test_missing_encryption_key_says_how_to_make_one(database_url: str) -> None:
    settings = Settings(_env_file=None, DATABASE_URL=database_url)  # type: ignore[call-arg]
    with IdeaExpansion(settings=settings, backend="postgres") as client:
        with pytest.raises(ConfigurationError, match=r"ENCRYPTION_KEY is not set.*token_hex\(32\)"):
            client.encryptor  # noqa: B018
        assert "postgres" in repr(client).lower()


def test_rotate_reencrypts_old_rows(
    fresh_database: Callable[..., str], project: SupabaseProject, tmp_path: Path
) -> None:
    """rotate() re-encrypts every user's credentials, so it runs on a database of its own: in the shared one
    it would re-key (or trip over) the rows other tests wrote."""
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, project)
    old_key, new_key = generate_key(), generate_key()

    def settings(key: str, *old: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            _env_file=None, DATABASE_URL=url, ENCRYPTION_KEY=key, ENCRYPTION_KEYS_OLD=" ".join(f" {k} " for k in old)
        )

    with IdeaExpansion(settings=settings(old_key), backend="postgres", storage_dir=tmp_path) as before:
        user = before.users.create(email=f"rotate-{uuid.uuid4().hex[:8]}@example.test")
        before.credentials.set("github", "gho_rotate_me", user_id=user.id)
        before.credentials.set("openai", "sk-rotate-me", user_id=user.id)
    with IdeaExpansion(settings=settings(new_key, old_key), backend="postgres", storage_dir=tmp_path) as rotated:
        other = rotated.users.create(email=f"rotate-{uuid.uuid4().hex[:8]}@example.test")
        rotated.credentials.set("github", "gho_already_current", user_id=other.id)
        assert rotated.credentials.get_secret("github", user_id=user.id) == "gho_rotate_me"
        report = rotated.credentials.rotate()
        assert (report.rotated, report.failed) == (2, [])  # the two rows under the old key, not the current one
        assert (rotated.credentials.rotate().rotated, report.clean) == (0, True)
    with IdeaExpansion(settings=settings(new_key), backend="postgres", storage_dir=tmp_path) as fresh:
        assert fresh.credentials.get_secret("github", user_id=user.id) == "gho_rotate_me"
        assert fresh.credentials.get_secret("openai", user_id=user.id) == "sk-rotate-me"
        assert fresh.credentials.get_secret("github", user_id=other.id) == "gho_already_current"
