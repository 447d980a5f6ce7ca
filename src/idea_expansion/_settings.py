"""Settings: the one place that reads the environment (and `.env`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, Json, SecretStr, StringConstraints, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._exceptions import ConfigurationError

__all__ = ["ImageMode", "ModelTask", "Settings", "TokenParameter"]

ModelTask = Literal["judge", "choose_format", "plan", "blog_post", "twitter_thread", "github_repo", "image", "review"]
"""The model calls of a run (`pipeline.providers.Task` is this type): keys of the per-task model settings."""

ImageMode = Literal["none", "card", "model"]
"""How images are made: none at all, a rendered title card (offline), or an image model (OpenAI Images API)."""

TokenParameter = Literal["auto", "max_completion_tokens", "max_tokens"]
"""The parameter an OpenAI-compatible server gets the output cap in (only ever one): `auto` picks by host."""

ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

_HOW_TO = {
    "database_url": "set DATABASE_URL to a PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1:54322/postgres, "
    "or to `embedded` for a private local database (pip install 'idea-expansion[local]')",
    "supabase_url": "set SUPABASE_URL to your project URL (Dashboard -> Settings -> API, or `supabase status`)",
    "supabase_service_role_key": "set SUPABASE_SERVICE_ROLE_KEY (Dashboard -> Settings -> API, or `supabase status`)",
    "supabase_anon_key": "set SUPABASE_ANON_KEY (Dashboard -> Settings -> API, or `supabase status`)",
    "supabase_jwt_secret": "set SUPABASE_JWT_SECRET (Dashboard -> Settings -> API -> JWT secret)",
    "openai_api_key": "set OPENAI_API_KEY (platform.openai.com -> API keys), or OPENAI_BASE_URL to an "
    "OpenAI-compatible server that needs no key (Ollama, vLLM)",
    "anthropic_api_key": "set ANTHROPIC_API_KEY (console.anthropic.com -> API keys), or ANTHROPIC_BASE_URL to a "
    "compatible server that needs no key",
    "encryption_key": 'set ENCRYPTION_KEY to 64 hex characters; generate one with: python -c "import secrets; '
    'print(secrets.token_hex(32))"',
}


class Settings(BaseSettings):
    """Configuration from the environment (and `.env`), under the names Supabase projects already use."""

    # protected_namespaces: model_timeout and model_max_retries are settings, not pydantic's model_* API
    # (older pydantic-settings protect all of "model_" and warn).
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", protected_namespaces=("settings_",)
    )

    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "IDEA_EXPANSION_DATABASE_URL")
    )
    """Direct PostgreSQL URL (Supabase direct or pooled connection, or `supabase start`'s port 54322), or
    `embedded` for the private local server of the `local` extra. Secret: it usually holds the password."""

    supabase_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL")
    )
    """Supabase project URL, e.g. https://abc.supabase.co or http://127.0.0.1:54321."""

    supabase_service_role_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY")
    )
    """The service-role key: full access, server-side only."""

    supabase_anon_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_ANON_KEY", "NEXT_PUBLIC_SUPABASE_ANON_KEY")
    )
    """The anon (public) key."""

    supabase_jwt_secret: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET"))
    """The project's legacy JWT secret: mints short-lived user tokens, and verifies HS256 access tokens."""

    supabase_jwks_url: str | None = Field(default=None, validation_alias=AliasChoices("SUPABASE_JWKS_URL"))
    """Where the project's public signing keys are published (a JWKS). Direct Postgres verifies Supabase Auth's
    ES256/RS256 access tokens with them; default: `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`."""

    supabase_jwks: str | None = Field(default=None, validation_alias=AliasChoices("SUPABASE_JWKS"))
    """The JWKS document itself (JSON), instead of fetching it from SUPABASE_JWKS_URL (offline setups, tests)."""

    encryption_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("ENCRYPTION_KEY"))
    """64 hex characters (32 bytes): the AES-256-GCM key for stored credentials."""

    encryption_keys_old: SecretStr | None = Field(default=None, validation_alias=AliasChoices("ENCRYPTION_KEYS_OLD"))
    """Comma-separated older keys, still accepted for decryption until `credentials.rotate()` has run."""

    backend: Literal["rest", "postgres"] | None = Field(
        default=None, validation_alias=AliasChoices("IDEA_EXPANSION_BACKEND")
    )
    """Force a backend; by default REST when SUPABASE_URL is set, direct Postgres when DATABASE_URL is."""

    storage_dir: str | None = Field(default=None, validation_alias=AliasChoices("IDEA_EXPANSION_STORAGE_DIR"))
    """Where the Postgres backend keeps stored files (default: the user cache directory)."""

    openai_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    """OpenAI API key, for the openai provider and images."""

    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY"))
    """Anthropic API key, for the anthropic provider."""

    provider: str = Field(default="offline", validation_alias=AliasChoices("IDEA_EXPANSION_PROVIDER"))
    """Model providers in fallback order, comma-separated: offline (default), openai, anthropic."""

    openai_base_url: str | None = Field(default=None, validation_alias=AliasChoices("OPENAI_BASE_URL"))
    """An OpenAI-compatible server instead of api.openai.com, e.g. http://127.0.0.1:11434/v1 (Ollama) or
    http://127.0.0.1:8000/v1 (vLLM). With it, OPENAI_API_KEY is optional."""

    openai_model: ModelName = Field(default="gpt-4o-mini", validation_alias=AliasChoices("IDEA_EXPANSION_OPENAI_MODEL"))
    """The OpenAI (or OpenAI-compatible) model for every task without its own in IDEA_EXPANSION_OPENAI_MODELS."""

    # Json[...]: pydantic parses the value itself, so a malformed one is a ValidationError naming the variable.
    openai_models: Json[dict[ModelTask, ModelName]] = Field(
        default_factory=dict, validation_alias=AliasChoices("IDEA_EXPANSION_OPENAI_MODELS")
    )
    """A model per task, JSON: {"github_repo": "gpt-4.1", "judge": "gpt-4o-mini"}; the keys are tasks."""

    openai_token_parameter: TokenParameter = Field(
        default="auto", validation_alias=AliasChoices("IDEA_EXPANSION_OPENAI_TOKEN_PARAMETER")
    )
    """The one parameter each call's output cap is sent in: auto (the default) sends max_completion_tokens
    to api.openai.com and *.openai.azure.com and max_tokens to any other server (Ollama, vLLM, llama.cpp);
    max_completion_tokens or max_tokens send that one to any server."""

    anthropic_base_url: str | None = Field(default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL"))
    """An Anthropic-compatible server instead of api.anthropic.com. With it, ANTHROPIC_API_KEY is optional."""

    anthropic_model: ModelName = Field(
        default="claude-haiku-4-5", validation_alias=AliasChoices("IDEA_EXPANSION_ANTHROPIC_MODEL")
    )
    """The Anthropic model for every task without its own in IDEA_EXPANSION_ANTHROPIC_MODELS."""

    anthropic_models: Json[dict[ModelTask, ModelName]] = Field(
        default_factory=dict, validation_alias=AliasChoices("IDEA_EXPANSION_ANTHROPIC_MODELS")
    )
    """A model per task, JSON: {"github_repo": "claude-sonnet-4-5"}; the keys are tasks."""

    image_mode: ImageMode = Field(default="card", validation_alias=AliasChoices("IDEA_EXPANSION_IMAGE_MODE"))
    """none (no images: image runs and covers are refused), card (an offline title card, the default) or
    model (IDEA_EXPANSION_IMAGE_MODEL through the OpenAI Images API: paid per image)."""

    image_model: ModelName = Field(default="gpt-image-1", validation_alias=AliasChoices("IDEA_EXPANSION_IMAGE_MODEL"))
    """The image model of image mode `model`."""

    model_timeout: float = Field(
        default=60.0, gt=0, le=3600, validation_alias=AliasChoices("IDEA_EXPANSION_MODEL_TIMEOUT")
    )
    """Seconds to wait for one model answer; a call allowed more than 4,000 output tokens waits
    proportionally longer (github_repo, 16,000 tokens: four times as long)."""

    model_max_retries: int = Field(
        default=2, ge=0, le=10, validation_alias=AliasChoices("IDEA_EXPANSION_MODEL_MAX_RETRIES")
    )
    """Retries of a model call after a rate limit, a timeout or a server error (the SDKs back off)."""

    prices: Json[dict[str, Any]] = Field(default_factory=dict, validation_alias=AliasChoices("IDEA_EXPANSION_PRICES"))
    """USD per million tokens, JSON: {"gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}}.
    Checked by `pipeline.pricing.PriceTable`; empty (the default): no costs are recorded."""

    review_threshold: int = Field(
        default=70, ge=0, le=100, validation_alias=AliasChoices("IDEA_EXPANSION_REVIEW_THRESHOLD")
    )
    """The review score (0-100) below which a draft gets its one revision pass."""

    @field_validator("openai_models", "anthropic_models", "prices", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        """A mapping given in code is taken as it is (Json[...] otherwise wants text); blank text is {}."""
        if isinstance(value, Mapping):
            return json.dumps(dict(value), default=str)
        if isinstance(value, str | bytes) and not value.strip():
            return "{}"
        return value

    @field_validator("openai_base_url", "anthropic_base_url", mode="before")
    @classmethod
    def _base_url(cls, value: Any) -> Any:
        """Blank is unset; anything else is an http(s) URL."""
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not value.startswith(("http://", "https://")) or len(value) > 2000:
                raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1")
        return value

    def older_encryption_keys(self) -> list[str]:
        """ENCRYPTION_KEYS_OLD split into keys."""
        if self.encryption_keys_old is None:
            return []
        return [k.strip() for k in self.encryption_keys_old.get_secret_value().split(",") if k.strip()]

    def require(self, name: str) -> str:
        """Return a setting's value, or raise `ConfigurationError` saying how to set it."""
        value = getattr(self, name)
        if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
            raise ConfigurationError(f"{name.upper()} is not set: {_HOW_TO.get(name, 'set it in the environment')}")
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
