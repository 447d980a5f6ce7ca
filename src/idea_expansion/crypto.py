"""AES-256-GCM encryption of stored credentials.

Format (version 2, what `encrypt` writes): JSON text
    {"v": 2, "kid": "<8 hex>", "iv": "<24 hex>", "ct": "<hex>", "tag": "<32 hex>"}
- a fresh random 96-bit nonce per encryption (NIST SP 800-38D's recommended size);
- additional authenticated data binding the ciphertext to its row: b"idea-expansion/v2|<user_id>|<provider>",
  so a ciphertext copied to another user or provider fails to decrypt;
- `kid`, the first 8 hex digits of SHA-256 of the key, picks the key, so keys can rotate: `Encryptor`
  holds the current key and any older ones, decrypts with whichever matches and `rotate()`s old rows.

The original app's format (`{"ciphertext","iv","authTag"}`, hex, 16-byte IV, no AAD) is still read, so
existing rows migrate: decrypt them, then `rotate()` re-encrypts them as version 2.

Stored values are user-writable text (a user may put anything in their own row), so reading one never
raises anything but `DecryptionError`, whatever its shape or size.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._exceptions import ConfigurationError, DecryptionError

__all__ = ["Encryptor", "generate_key", "key_id", "open_sealed", "seal"]

_NONCE_BYTES = 12
_TAG_BYTES = 16
_LEGACY_IV_BYTES = 16
# The column holds at most 16384 characters; anything much longer is not an envelope we wrote.
_MAX_ENVELOPE_CHARS = 65536
_SHORT = reprlib.Repr()  # for naming a bad value in an error: bounded in depth and length
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 24, 24, 3, 3
_KEY_HINT = 'generate one with: python -c "import secrets; print(secrets.token_hex(32))"'


def generate_key() -> str:
    """A new random key: 64 hex characters."""
    return secrets.token_hex(32)


def key_id(key: bytes) -> str:
    """The key's public identifier stored with each ciphertext."""
    return hashlib.sha256(key).hexdigest()[:8]


def parse_key(value: str, *, name: str = "ENCRYPTION_KEY") -> bytes:
    """Decode a 64-hex-character key, or raise `ConfigurationError` saying what is wrong (never the key)."""
    text = value.strip()
    if len(text) != 64:
        raise ConfigurationError(f"{name} must be exactly 64 hex characters (32 bytes), got {len(text)}; {_KEY_HINT}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigurationError(f"{name} must contain only hexadecimal characters (0-9, a-f); {_KEY_HINT}") from None


def seal(aead: AESGCM, nonce: bytes, plaintext: bytes, aad: bytes | None) -> tuple[bytes, bytes]:
    """AES-GCM encryption split the way we store it: (ciphertext, 16-byte tag)."""
    sealed = aead.encrypt(nonce, plaintext, aad)
    return sealed[:-_TAG_BYTES], sealed[-_TAG_BYTES:]


def open_sealed(aead: AESGCM, nonce: bytes, ciphertext: bytes, tag: bytes, aad: bytes | None) -> bytes:
    """The inverse of `seal`. Raises `DecryptionError` when the tag does not verify."""
    if len(tag) != _TAG_BYTES:
        raise DecryptionError("invalid encrypted data: the tag must be 16 bytes")
    try:
        return aead.decrypt(nonce, ciphertext + tag, aad)
    except InvalidTag:
        raise DecryptionError("decryption failed: authentication tag mismatch") from None


def _aad(user_id: UUID | str, provider: str) -> bytes:
    return f"idea-expansion/v2|{UUID(str(user_id))}|{provider}".encode()


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM


class Encryptor:
    """Encrypts with the current key; decrypts with the current or any older key."""

    def __init__(self, current: bytes, older: Sequence[bytes] = ()) -> None:
        keys = [current, *older]
        for key in keys:
            if len(key) != 32:
                raise ConfigurationError(f"encryption keys must be 32 bytes, got {len(key)}; {_KEY_HINT}")
        self._current = _Key(key_id(current), AESGCM(current))
        self._keys = {key_id(k): _Key(key_id(k), AESGCM(k)) for k in keys}
        # Legacy rows carry no key id: try every key, newest first.
        self._legacy_order = [self._keys[key_id(k)] for k in keys]

    def __repr__(self) -> str:
        return f"Encryptor(current={self._current.id!r}, keys={len(self._keys)})"

    @property
    def current_key_id(self) -> str:
        return self._current.id

    def encrypt(self, plaintext: str, *, user_id: UUID | str, provider: str) -> str:
        """Encrypt `plaintext` for (user, provider); returns the JSON envelope to store."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext, tag = seal(self._current.aead, nonce, plaintext.encode("utf-8"), _aad(user_id, provider))
        return json.dumps(
            {"v": 2, "kid": self._current.id, "iv": nonce.hex(), "ct": ciphertext.hex(), "tag": tag.hex()},
            separators=(",", ":"),
        )

    def decrypt(self, envelope: str, *, user_id: UUID | str, provider: str) -> str:
        """Decrypt a stored value (version 2 or the original app's format).

        Raises:
            DecryptionError: tampered, moved to another user/provider, malformed (of any shape or size,
                never another exception), or under a key that is not configured.
        """
        data = _parse(envelope)
        if "v" in data:
            return self._decrypt_v2(data, user_id=user_id, provider=provider)
        return self._decrypt_legacy(data)

    def needs_rotation(self, envelope: str) -> bool:
        """True when a stored value is legacy or under an older key.

        Raises:
            DecryptionError: the value is not a JSON object at all.
        """
        data = _parse(envelope)
        return data.get("v") != 2 or data.get("kid") != self._current.id

    def _decrypt_v2(self, data: dict[str, Any], *, user_id: UUID | str, provider: str) -> str:
        version, kid = data.get("v"), data.get("kid")
        if type(version) is not int or version != 2:
            raise DecryptionError(f"unsupported credential format version {_SHORT.repr(version)}")
        if not isinstance(kid, str):
            raise DecryptionError("invalid encrypted data: kid is missing or not a string")
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(
                f"credential was encrypted under key {_SHORT.repr(kid)}, which is not configured "
                "(add the old key to ENCRYPTION_KEYS_OLD to read and rotate it)"
            )
        nonce, ct, tag = _hex(data, "iv"), _hex(data, "ct"), _hex(data, "tag")
        if len(nonce) != _NONCE_BYTES or len(tag) != _TAG_BYTES:
            raise DecryptionError("invalid encrypted data: wrong nonce or tag length")
        try:
            return _text(open_sealed(key.aead, nonce, ct, tag, _aad(user_id, provider)))
        except DecryptionError:
            raise DecryptionError(
                "decryption failed: the data was tampered with, belongs to another user or provider, "
                "or the key is wrong"
            ) from None

    def _decrypt_legacy(self, data: dict[str, Any]) -> str:
        if not all(data.get(k) for k in ("ciphertext", "iv", "authTag")):
            raise DecryptionError("invalid encrypted data: missing required fields (ciphertext, iv, or authTag)")
        iv, ct, tag = _hex(data, "iv"), _hex(data, "ciphertext"), _hex(data, "authTag")
        # The original accepted truncated tags (Node without authTagLength); a full 16-byte tag is required here.
        if len(iv) != _LEGACY_IV_BYTES or len(tag) != _TAG_BYTES:
            raise DecryptionError("invalid encrypted data: the legacy format needs a 16-byte IV and a 16-byte tag")
        for key in self._legacy_order:
            try:
                plaintext = open_sealed(key.aead, iv, ct, tag, None)
            except DecryptionError:
                continue
            return _text(plaintext)
        raise DecryptionError(
            "decryption failed: the data was tampered with or no configured key matches (legacy format)"
        )


def _parse(envelope: object) -> dict[str, Any]:
    """The envelope's JSON object. Anything else (not text, too long, nested too deep, not JSON, not an
    object) is a `DecryptionError` that names the problem, never the value."""
    if isinstance(envelope, bytes | bytearray | memoryview):
        try:
            envelope = bytes(envelope).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("invalid encrypted data: not UTF-8 text") from None
    if not isinstance(envelope, str):
        raise DecryptionError(f"invalid encrypted data: expected JSON text, got {type(envelope).__name__}")
    if len(envelope) > _MAX_ENVELOPE_CHARS:
        raise DecryptionError(f"invalid encrypted data: {len(envelope)} characters is too long for an envelope")
    try:
        data = json.loads(envelope)
    except json.JSONDecodeError as exc:
        raise DecryptionError(f"failed to parse encrypted data as JSON: {exc.msg}") from None
    except RecursionError:
        raise DecryptionError("failed to parse encrypted data as JSON: nested too deeply") from None
    except ValueError:  # e.g. a number longer than int() converts
        raise DecryptionError("failed to parse encrypted data as JSON: a value is out of range") from None
    if not isinstance(data, dict):
        raise DecryptionError("invalid encrypted data: expected a JSON object")
    return data


def _hex(data: dict[str, Any], field: str) -> bytes:
    value = data.get(field)
    if not isinstance(value, str):
        raise DecryptionError(f"invalid encrypted data: {field} is missing or not a string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecryptionError(f"invalid encrypted data: {field} is not hex") from None


def _text(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError("decryption failed: the plaintext is not UTF-8 text") from None
