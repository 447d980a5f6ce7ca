"""`client.credentials`: per-user secrets, stored only as AES-256-GCM ciphertext."""

from __future__ import annotations

import builtins
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from .._exceptions import DecryptionError, InvalidRequestError, NotFoundError
from ..backends._base import Eq, Filter, Insert, Is, Keyset, Order, Select, Update
from ..crypto import Encryptor
from ..types import Credential, Provider, ValidationStatus
from ..types.ids import IdLike
from ..types.params import is_utf8
from ._base import AsyncResource, Operations, Steps, SyncResource, operation, to_model

# Everything but the ciphertext: listing credentials never moves a secret over the wire.
_METADATA = ("id", "user_id", "provider", "is_active", "validation_status", "created_at", "updated_at")
_ROTATION_PAGE = 500
_ROTATION_ATTEMPTS = 3


class RotationReport(BaseModel):
    """What `credentials.rotate()` did."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    rotated: int
    """Rows re-encrypted under the current key."""
    failed: list[UUID]
    """Ids of rows that could not be read (malformed, tampered with, or under a key that is not
    configured). They are left as they are. Only when this is empty can an old key be retired safely."""

    @property
    def clean(self) -> bool:
        """True when every row is under the current key (nothing failed)."""
        return not self.failed


def _provider(value: Provider | str) -> Provider:
    try:
        return Provider(value)
    except ValueError:
        raise InvalidRequestError(
            f"provider must be one of {', '.join(p.value for p in Provider)}, not {value!r}"
        ) from None


class _CredentialOperations(Operations):
    """Encrypted credentials (`public.credentials`), one per (user, provider)."""

    @operation
    def set(self, provider: Provider | str, secret: str, *, user_id: IdLike | None = None) -> Steps[Credential]:
        """Encrypt and store `secret` for `provider`, replacing any previous one (re-activated, not yet
        validated). The ciphertext is bound to (user, provider).

        Raises:
            InvalidRequestError: unknown provider or empty secret.
            ConfigurationError: ENCRYPTION_KEY is missing or malformed.
        """
        return (yield from self._store(provider, secret, self._owner(user_id), self._client.encryptor))

    def _store(self, provider: Provider | str, secret: str, owner: UUID, encryptor: Encryptor) -> Steps[Credential]:
        provider = _provider(provider)
        if not isinstance(secret, str) or not secret or not is_utf8(secret):
            raise InvalidRequestError("the secret must be a non-empty string of valid Unicode")
        row = {
            "user_id": owner,
            "provider": provider.value,
            "encrypted_value": encryptor.encrypt(secret, user_id=owner, provider=provider.value),
            "is_active": True,
            "validation_status": ValidationStatus.NOT_CHECKED.value,
        }
        request = Insert("credentials", [row], on_conflict=("user_id", "provider"))
        stored = yield from self._first(request, "credential")
        return to_model(Credential, {k: stored[k] for k in _METADATA})

    @operation
    def get_secret(self, provider: Provider | str, *, user_id: IdLike | None = None) -> Steps[str]:
        """Decrypt the active secret for `provider`.

        Raises:
            NotFoundError: none stored, or it was deactivated.
            DecryptionError: the stored value was tampered with, moved, or needs a key not configured.
        """
        provider = _provider(provider)
        owner = self._owner(user_id)
        rows = yield Select(
            "credentials",
            [Eq("user_id", owner), Eq("provider", provider.value), Is("is_active", True)],
            columns=("encrypted_value",),
        )
        if not rows:
            raise NotFoundError(f"no active {provider.value} credential", code="PGRST116")
        return self._client.encryptor.decrypt(rows[0]["encrypted_value"], user_id=owner, provider=provider.value)

    @operation
    def list(self, *, user_id: IdLike | None = None) -> Steps[builtins.list[Credential]]:
        """Credential metadata (never the secret), for the acting user or `user_id`: at most one per
        provider, so the whole list is one short answer (no pages)."""
        request = Select("credentials", [Eq("user_id", self._owner(user_id))], columns=_METADATA)
        return (yield from self._many(Credential, request))

    @operation
    def deactivate(self, provider: Provider | str, *, user_id: IdLike | None = None) -> Steps[Credential]:
        """Stop using a credential (it is kept, but never decrypted again until `set`)."""
        return (yield from self._update(provider, {"is_active": False}, user_id))

    @operation
    def mark_validated(
        self, provider: Provider | str, valid: bool, *, user_id: IdLike | None = None
    ) -> Steps[Credential]:
        """Record the result of checking the credential against its provider. Service client: users
        cannot set their own credential's validation status (the database refuses it).

        Raises:
            PermissionDeniedError: called as a user.
            NotFoundError: no such credential.
        """
        if not isinstance(valid, bool):
            raise InvalidRequestError(f"valid must be True or False, not {valid!r}")
        status = ValidationStatus.VALID if valid else ValidationStatus.INVALID
        return (yield from self._update(provider, {"validation_status": status.value}, user_id))

    @operation
    def rotate(self) -> Steps[RotationReport]:
        """Re-encrypt every stored credential still under an older key (or in the original app's format)
        under the current key. Service client.

        Never stops at a row it cannot read (a user can write anything into their own row): it rotates
        every row it can and reports the ids of the others. When `failed` is empty, the old keys can be
        removed from ENCRYPTION_KEYS_OLD without losing a secret. The validation status is kept: the
        secret is the same.
        """
        encryptor = self._client.encryptor
        rotated, failed = 0, []
        columns = ("id", "user_id", "provider", "encrypted_value", "created_at")
        order = [Order("created_at", descending=True), Order("id", descending=True)]
        after: list[Filter] = []
        while True:
            page = yield Select("credentials", after, order=order, limit=_ROTATION_PAGE, columns=columns)
            for row in page:
                outcome = yield from self._rotate_row(encryptor, row)
                if outcome is None:
                    failed.append(UUID(str(row["id"])))
                else:
                    rotated += outcome
            if len(page) < _ROTATION_PAGE:
                return RotationReport(rotated=rotated, failed=failed)
            last = page[-1]
            after = [Keyset("created_at", last["created_at"], UUID(str(last["id"])))]

    def _rotate_row(self, encryptor: Encryptor, row: dict[str, Any]) -> Steps[int | None]:
        """1 when re-encrypted, 0 when it needs nothing, None when it cannot be read. Compare-and-swap on
        the old ciphertext, so a secret the user replaced meanwhile is never overwritten."""
        for _ in range(_ROTATION_ATTEMPTS):
            value = row["encrypted_value"]
            try:
                if not encryptor.needs_rotation(value):
                    return 0
                secret = encryptor.decrypt(value, user_id=row["user_id"], provider=row["provider"])
            except DecryptionError:
                return None
            fresh = encryptor.encrypt(secret, user_id=row["user_id"], provider=row["provider"])
            if (
                yield Update(
                    "credentials", {"encrypted_value": fresh}, [Eq("id", row["id"]), Eq("encrypted_value", value)]
                )
            ):
                return 1
            current = yield Select(
                "credentials", [Eq("id", row["id"])], columns=("id", "user_id", "provider", "encrypted_value")
            )
            if not current:
                return 0  # deleted meanwhile
            row = current[0]
        return None

    def _update(self, provider: Provider | str, values: dict[str, Any], user_id: IdLike | None) -> Steps[Credential]:
        provider = _provider(provider)
        stored = yield from self._first(
            Update("credentials", values, [Eq("user_id", self._owner(user_id)), Eq("provider", provider.value)]),
            f"{provider.value} credential",
        )
        return to_model(Credential, {k: stored[k] for k in _METADATA})


class Credentials(_CredentialOperations, SyncResource):
    """Encrypted credentials (`public.credentials`), one per (user, provider)."""


class AsyncCredentials(_CredentialOperations, AsyncResource):
    """Encrypted credentials, on the async client."""
