"""Settings: the one place that reads the environment (and `.env`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._exceptions import ConfigurationError

__all__ = ["Settings"]

_HOW_TO = {
    "database_url": "set DATABASE_URL to a PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1:54322/postgres, "
    "or to `embedded` for a private local database (pip install 'idea-expansion[local]')",
    "supabase_url": "set SUPABASE_URL to your project URL (Dashboard -> Settings -> API, or `supabase status`)",
    "supabase_service_role_key": "set SUPABASE_SERVICE_ROLE_KEY (Dashboard -> Settings -> API, or `supabase status`)",
    "supabase_anon_key": "set SUPABASE_ANON_KEY (Dashboard -> Settings -> API, or `supabase status`)",
    "supabase_jwt_secret": "set SUPABASE_JWT_SECRET (Dashboard -> Settings -> API -> JWT secret)",
    "openai_api_key": "set OPENAI_API_KEY (platform.openai.com -> API keys)",
    "anthropic_api_key": "set ANTHROPIC_API_KEY (console.anthropic.com -> API keys)",
    "encryption_key": 'set ENCRYPTION_KEY to 64 hex characters; generate one with: python -c "import secrets; '
    'print(secrets.token_hex(32))"',
}


class Settings(BaseSettings):
    """Configuration from the environment (and `.env`), under the names Supabase projects already use."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

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
