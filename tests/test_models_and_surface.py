"""Models cannot drift from the migrations; the public surface is pinned; settings fail clearly."""

from __future__ import annotations

import types
import typing
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Any

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
)

from ._db import Db

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
    "jsonb": (dict, list),
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


EXPECTED_ALL = [
    "APIError",
    "AuthenticationError",
    "BlogPost",
    "ChargeStatus",
    "ConfigurationError",
    "ConflictError",
    "ConnectionError",
    "Credential",
    "CreditCharge",
    "CreditType",
    "DatabaseSetupError",
    "DecryptionError",
    "Encryptor",
    "Execution",
    "ExecutionStatus",
    "Idea",
    "IdeaExpansion",
    "IdeaExpansionError",
    "IdeaPage",
    "IdeaStatus",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "NotFoundError",
    "Output",
    "OutputFormat",
    "PaymentReceipt",
    "PaymentStatus",
    "PermissionDeniedError",
    "PipelineError",
    "PostgresBackend",
    "Provider",
    "RestBackend",
    "Settings",
    "Stage",
    "StorageError",
    "TimeoutError",
    "Usage",
    "User",
    "ValidationStatus",
    "__version__",
    "generate_key",
]


def test_public_surface_is_pinned() -> None:
    assert idea_expansion.__all__ == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert hasattr(idea_expansion, name), name


def test_error_tree() -> None:
    from idea_expansion import _exceptions as e

    assert issubclass(e.InsufficientCreditsError, e.APIError)
    assert issubclass(e.StorageError, e.APIError)
    for cls in (e.ConfigurationError, e.APIError, e.DecryptionError, e.ConnectionError, e.TimeoutError):
        assert issubclass(cls, e.IdeaExpansionError)
    cases = {
        "PT402": e.InsufficientCreditsError,
        "42501": e.PermissionDeniedError,
        "PGRST301": e.AuthenticationError,
        "PGRST116": e.NotFoundError,
        "PT404": e.NotFoundError,
        "23505": e.ConflictError,
        "23503": e.ConflictError,
        "23514": e.InvalidRequestError,
        "22P02": e.InvalidRequestError,
        "P0001": e.InvalidRequestError,
        "XX000": e.APIError,
    }
    for code, cls in cases.items():
        assert type(e.error_from_code(code, "m")) is cls, code


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


def test_rotate_reencrypts_old_rows(database_url: str, client: IdeaExpansion, encryption_key: str) -> None:
    from idea_expansion import generate_key

    user = client.users.create(email=f"rotate-{uuid.uuid4().hex[:8]}@example.test")
    client.credentials.set("github", "gho_rotate_me", user_id=user.id)
    new_key = generate_key()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=new_key, ENCRYPTION_KEYS_OLD=f" {encryption_key} "
    )
    with IdeaExpansion(settings=settings, backend="postgres") as rotated:
        assert rotated.credentials.get_secret("github", user_id=user.id) == "gho_rotate_me"
        assert rotated.credentials.rotate() >= 1
        assert rotated.credentials.rotate() == 0
    only_new = Settings(_env_file=None, DATABASE_URL=database_url, ENCRYPTION_KEY=new_key)  # type: ignore[call-arg]
    with IdeaExpansion(settings=only_new, backend="postgres") as fresh:
        assert fresh.credentials.get_secret("github", user_id=user.id) == "gho_rotate_me"
