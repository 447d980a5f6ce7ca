"""Credential encryption: NIST AES-256-GCM vectors, tampering, binding, keys, rotation, legacy format."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idea_expansion import ConfigurationError, DecryptionError, Encryptor, generate_key
from idea_expansion.crypto import open_sealed, parse_key, seal

VECTORS = Path(cryptography_vectors.__file__).parent / "ciphers" / "AES" / "GCM"
USER = uuid.uuid4()
SECRET = "gho_the-plaintext-token"


def nist_vectors(name: str) -> Iterator[dict[str, str]]:
    """The AES-256 / 96-bit-IV / 128-bit-tag cases of a NIST CAVS .rsp file: exactly what we write."""
    section: dict[str, str] = {}
    case: dict[str, str] = {}
    for line in [*(VECTORS / name).read_text().splitlines(), ""]:
        line = line.strip()
        if line.startswith("["):
            key, _, value = line.strip("[]").partition(" = ")
            section[key] = value
        elif " = " in line or line.endswith(" ="):
            key, _, value = line.partition(" =")
            case[key.strip()] = value.strip()
        elif line == "FAIL":
            case["FAIL"] = "1"
        elif not line and case:
            if section.get("Taglen") == "128" and section.get("IVlen") == "96":
                yield case | {"IVlen": section["IVlen"]}
            case = {}


ENCRYPT = list(nist_vectors("gcmEncryptExtIV256.rsp"))
DECRYPT = list(nist_vectors("gcmDecrypt256.rsp"))


def test_vector_files_were_read() -> None:
    assert len(ENCRYPT) == len(DECRYPT) == 375
    assert sum(1 for v in DECRYPT if v.get("FAIL")) == 191
    assert any(v["AAD"] for v in ENCRYPT)


def test_nist_encrypt_vectors() -> None:
    for index, vector in enumerate(ENCRYPT):
        name = f"encrypt vector {index + 1} of {len(ENCRYPT)} (Count = {vector['Count']})"
        aead = AESGCM(bytes.fromhex(vector["Key"]))
        aad = bytes.fromhex(vector["AAD"]) or None
        ciphertext, tag = seal(aead, bytes.fromhex(vector["IV"]), bytes.fromhex(vector["PT"]), aad)
        assert (ciphertext.hex(), tag.hex()) == (vector["CT"], vector["Tag"]), name
        assert open_sealed(aead, bytes.fromhex(vector["IV"]), ciphertext, tag, aad).hex() == vector["PT"], name


def test_nist_decrypt_vectors() -> None:
    for index, vector in enumerate(DECRYPT):
        name = f"decrypt vector {index + 1} of {len(DECRYPT)} (Count = {vector['Count']})"
        aead = AESGCM(bytes.fromhex(vector["Key"]))
        args = (aead, bytes.fromhex(vector["IV"]), bytes.fromhex(vector["CT"]), bytes.fromhex(vector["Tag"]))
        aad = bytes.fromhex(vector["AAD"]) or None
        try:
            plaintext = open_sealed(*args, aad)
        except DecryptionError:
            assert vector.get("FAIL"), f"{name} should decrypt but was refused"
        else:
            assert not vector.get("FAIL"), f"{name} is a forgery but decrypted"
            assert plaintext.hex() == vector["PT"], name


@pytest.fixture
def encryptor() -> Encryptor:
    return Encryptor(bytes.fromhex(generate_key()))


def test_round_trip_and_envelope(encryptor: Encryptor) -> None:
    stored = encryptor.encrypt(SECRET, user_id=USER, provider="github")
    envelope = json.loads(stored)
    assert set(envelope) == {"v", "kid", "iv", "ct", "tag"}
    assert (envelope["v"], len(envelope["iv"]), len(envelope["tag"])) == (2, 24, 32)
    assert SECRET not in stored
    assert encryptor.decrypt(stored, user_id=str(USER), provider="github") == SECRET


def test_no_two_encryptions_share_a_nonce(encryptor: Encryptor) -> None:
    nonces = {json.loads(encryptor.encrypt(SECRET, user_id=USER, provider="github"))["iv"] for _ in range(2000)}
    assert len(nonces) == 2000


@pytest.mark.parametrize("field", ["iv", "ct", "tag"])
def test_a_flipped_byte_anywhere_fails(encryptor: Encryptor, field: str) -> None:
    envelope = json.loads(encryptor.encrypt(SECRET, user_id=USER, provider="github"))
    raw = bytearray(bytes.fromhex(envelope[field]))
    for position in range(len(raw)):
        tampered = raw.copy()
        tampered[position] ^= 0x01
        forged = json.dumps(envelope | {field: tampered.hex()})
        with pytest.raises(DecryptionError) as failure:
            encryptor.decrypt(forged, user_id=USER, provider="github")
        assert SECRET not in str(failure.value)


@pytest.mark.parametrize(("user_id", "provider"), [(uuid.uuid4(), "github"), (USER, "openai")])
def test_a_ciphertext_moved_to_another_row_fails(encryptor: Encryptor, user_id: uuid.UUID, provider: str) -> None:
    stored = encryptor.encrypt(SECRET, user_id=USER, provider="github")
    with pytest.raises(DecryptionError, match="another user or provider"):
        encryptor.decrypt(stored, user_id=user_id, provider=provider)


def test_a_wrong_key_fails_and_names_the_missing_key_id(encryptor: Encryptor) -> None:
    stored = encryptor.encrypt(SECRET, user_id=USER, provider="github")
    other = Encryptor(bytes.fromhex(generate_key()))
    with pytest.raises(DecryptionError, match=json.loads(stored)["kid"]):
        other.decrypt(stored, user_id=USER, provider="github")
    same_kid = json.loads(stored) | {"kid": other.current_key_id}
    with pytest.raises(DecryptionError, match="tampered"):
        other.decrypt(json.dumps(same_kid), user_id=USER, provider="github")


@pytest.mark.parametrize(
    ("stored", "fragment"),
    [
        ("not json", "failed to parse encrypted data as JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"v": 3}', "unsupported credential format version"),
        ('{"ciphertext": "", "iv": "00", "authTag": "00"}', "missing required fields"),
        ('{"v": 2, "kid": "KID", "iv": "zz", "ct": "", "tag": ""}', "not configured"),
    ],
)
def test_malformed_values_fail_clearly(encryptor: Encryptor, stored: str, fragment: str) -> None:
    stored = stored.replace("KID", "00000000")
    with pytest.raises(DecryptionError, match=fragment):
        encryptor.decrypt(stored, user_id=USER, provider="github")


def legacy_encrypt(key: bytes, plaintext: str) -> str:
    """What the original app wrote (encryption.ts): 16-byte IV, no AAD, hex fields in this order."""
    iv = secrets.token_bytes(16)
    sealed = AESGCM(key).encrypt(iv, plaintext.encode(), None)
    return json.dumps(
        {"ciphertext": sealed[:-16].hex(), "iv": iv.hex(), "authTag": sealed[-16:].hex()}, separators=(",", ":")
    )


def test_reads_the_original_apps_format_and_flags_it_for_rotation() -> None:
    key = bytes.fromhex(generate_key())
    encryptor = Encryptor(key)
    legacy = legacy_encrypt(key, SECRET)
    assert encryptor.decrypt(legacy, user_id=USER, provider="github") == SECRET
    assert encryptor.needs_rotation(legacy)
    truncated = json.loads(legacy)
    truncated["authTag"] = truncated["authTag"][:8]  # Node accepted 4-byte tags; we do not
    with pytest.raises(DecryptionError, match="16-byte tag"):
        encryptor.decrypt(json.dumps(truncated), user_id=USER, provider="github")


def test_older_keys_decrypt_and_only_the_current_one_encrypts() -> None:
    old, new = bytes.fromhex(generate_key()), bytes.fromhex(generate_key())
    stored = Encryptor(old).encrypt(SECRET, user_id=USER, provider="github")
    rotated = Encryptor(new, [old])
    assert rotated.decrypt(stored, user_id=USER, provider="github") == SECRET
    assert rotated.needs_rotation(stored)
    fresh = rotated.encrypt(SECRET, user_id=USER, provider="github")
    assert not rotated.needs_rotation(fresh)
    assert json.loads(fresh)["kid"] == rotated.current_key_id


@pytest.mark.parametrize(("value", "fragment"), [("", "got 0"), ("ab" * 31, "got 62"), ("zz" * 32, "hexadecimal")])
def test_bad_keys_are_configuration_errors_that_never_echo_the_key(value: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as failure:
        parse_key(value)
    assert (value not in str(failure.value)) or not value
    assert "secrets.token_hex(32)" in str(failure.value)
