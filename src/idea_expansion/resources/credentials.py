"""`client.credentials`: per-user secrets, stored only as AES-256-GCM ciphertext."""

from __future__ import annotations

import builtins
from typing import Any

from .._exceptions import InvalidRequestError, NotFoundError
from ..backends._base import Eq, Insert, Is, Select, Update
from ..crypto import Encryptor
from ..types import Credential, Provider, ValidationStatus
from ..types.ids import IdLike
from ._base import Resource, to_model

# Everything but the ciphertext: listing credentials never moves a secret over the wire.
_METADATA = ("id", "user_id", "provider", "is_active", "validation_status", "created_at", "updated_at")


def _provider(value: Provider | str) -> Provider:
    try:
        return Provider(value)
    except ValueError:
        raise InvalidRequestError(
            f"provider must be one of {', '.join(p.value for p in Provider)}, not {value!r}"
        ) from None


class Credentials(Resource):
    """Encrypted credentials (`public.credentials`), one per (user, provider)."""

    def set(
        self,
        provider: Provider | str,
        secret: str,
        *,
        user_id: IdLike | None = None,
        _encryptor: Encryptor | None = None,
    ) -> Credential:
        """Encrypt and store `secret` for `provider`, replacing any previous one (re-activated, not yet
        validated). The ciphertext is bound to (user, provider).

        Raises:
            InvalidRequestError: unknown provider or empty secret.
            ConfigurationError: ENCRYPTION_KEY is missing or malformed.
        """
        provider = _provider(provider)
        if not secret:
            raise InvalidRequestError("the secret must not be empty")
        owner = self._owner(user_id)
        encryptor = _encryptor or self._client.encryptor
        row = {
            "user_id": owner,
            "provider": provider.value,
            "encrypted_value": encryptor.encrypt(secret, user_id=owner, provider=provider.value),
            "is_active": True,
            "validation_status": ValidationStatus.NOT_CHECKED.value,
        }
        stored = self._first(Insert("credentials", [row], on_conflict=("user_id", "provider")), "credential")
        return to_model(Credential, {k: stored[k] for k in _METADATA})

    def get_secret(self, provider: Provider | str, *, user_id: IdLike | None = None) -> str:
        """Decrypt the active secret for `provider`.

        Raises:
            NotFoundError: none stored, or it was deactivated.
            DecryptionError: the stored value was tampered with, moved, or needs a key not configured.
        """
        provider = _provider(provider)
        owner = self._owner(user_id)
        rows = self._rows(
            Select(
                "credentials",
                [Eq("user_id", owner), Eq("provider", provider.value), Is("is_active", True)],
                columns=("encrypted_value",),
            )
        )
        if not rows:
            raise NotFoundError(f"no active {provider.value} credential", code="PGRST116")
        return self._client.encryptor.decrypt(rows[0]["encrypted_value"], user_id=owner, provider=provider.value)

    def list(self, *, user_id: IdLike | None = None) -> builtins.list[Credential]:
        """Credential metadata (never the secret), for the acting user or `user_id`."""
        rows = self._rows(Select("credentials", [Eq("user_id", self._owner(user_id))], columns=_METADATA))
        return [to_model(Credential, r) for r in rows]

    def deactivate(self, provider: Provider | str, *, user_id: IdLike | None = None) -> Credential:
        """Stop using a credential (it is kept, but never decrypted again until `set`)."""
        return self._update(provider, {"is_active": False}, user_id)

    def mark_validated(self, provider: Provider | str, valid: bool, *, user_id: IdLike | None = None) -> Credential:
        """Record the result of checking the credential against its provider."""
        status = ValidationStatus.VALID if valid else ValidationStatus.INVALID
        return self._update(provider, {"validation_status": status.value}, user_id)

    def rotate(self) -> int:
        """Re-encrypt every stored credential still under an older key (or in the original app's format)
        under the current key. Service client. Returns how many rows changed."""
        rows = self._rows(Select("credentials", columns=("id", "user_id", "provider", "encrypted_value")))
        encryptor = self._client.encryptor
        changed = 0
        for row in rows:
            if not encryptor.needs_rotation(row["encrypted_value"]):
                continue
            secret = encryptor.decrypt(row["encrypted_value"], user_id=row["user_id"], provider=row["provider"])
            fresh = encryptor.encrypt(secret, user_id=row["user_id"], provider=row["provider"])
            # Only if nobody replaced it meanwhile: compare-and-swap on the old ciphertext.
            updated = self._rows(
                Update(
                    "credentials",
                    {"encrypted_value": fresh},
                    [Eq("id", row["id"]), Eq("encrypted_value", row["encrypted_value"])],
                )
            )
            changed += len(updated)
        return changed

    def _update(self, provider: Provider | str, values: dict[str, Any], user_id: IdLike | None) -> Credential:
        provider = _provider(provider)
        stored = self._first(
            Update("credentials", values, [Eq("user_id", self._owner(user_id)), Eq("provider", provider.value)]),
            f"{provider.value} credential",
        )
        return to_model(Credential, {k: stored[k] for k in _METADATA})
