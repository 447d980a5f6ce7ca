"""User access tokens: minting short-lived ones (HS256 with the project's JWT secret, as Supabase Auth's
legacy secret signs them) and verifying the ones Supabase Auth issues, signed either with that legacy
secret (HS256) or with the project's asymmetric signing keys (ES256, RS256), whose public halves Supabase
Auth publishes as a JWKS at `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`.

There is deliberately no way to read a token's user without verifying it: a claim read that way ends
up trusted somewhere (an id passed on to service-role calls), whatever the API later does with the
token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

import jwt

if TYPE_CHECKING:  # httpx loads only when a JWKS is fetched
    import httpx

from ._exceptions import APIConnectionError, APITimeoutError, AuthenticationError, ConfigurationError

__all__ = ["ASYMMETRIC_ALGORITHMS", "JwksKeys", "jwks_url_for", "mint_user_token", "verify_user_token"]

ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
"""The asymmetric algorithms Supabase Auth signs with (ECC P-256 and RSA keys)."""

_CODE = "PGRST301"  # PostgREST's code for a JWT it refuses: the same error on both backends


def mint_user_token(secret: str, user_id: UUID, *, lifetime_seconds: int = 300) -> str:
    """A JWT for `user_id` with role and aud `authenticated`, valid for `lifetime_seconds`."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + lifetime_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def jwks_url_for(supabase_url: str) -> str:
    """Where Supabase Auth publishes a project's public signing keys."""
    return f"{supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json"


class JwksKeys:
    """A project's public signing keys by `kid`: an inline JWKS document, or the one Supabase Auth
    publishes, fetched on first use and cached. The set is fetched again when it is older than
    `max_age` seconds, and when a token names a kid it does not hold (a key rotation shows at once), but
    for such misses at most once per `refetch_interval` seconds, so tokens with made-up kids cannot make
    every request fetch it.

    Only asymmetric signing keys are taken from the set: symmetric (`oct`) keys, encryption keys and
    algorithms other than ES256/RS256 are ignored, so a token can never be checked with a public key
    used as an HMAC secret."""

    def __init__(
        self,
        *,
        url: str | None = None,
        document: str | Mapping[str, Any] | None = None,
        http: httpx.Client | None = None,
        max_age: float = 600.0,
        refetch_interval: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        if url is None and document is None:
            raise ConfigurationError("JwksKeys needs a JWKS url or document")
        self.url = url
        self._http = http
        self._max_age = max_age
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._missed_at = float("-inf")
        if document is not None:
            self._keys = _parse_jwks(document, source="SUPABASE_JWKS")
            self._fetched_at = float("inf")  # an inline set never goes stale

    def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """The key `kid` names, for a token signed with `algorithm`.

        Raises:
            AuthenticationError: no kid, a kid not in the set, or a key of another algorithm.
            ConfigurationError: the JWKS cannot be read (bad JSON, or an HTTP 4xx from its URL).
            APIConnectionError, APITimeoutError: the JWKS URL cannot be reached.
        """
        if not kid:
            raise AuthenticationError("invalid access token: it names no signing key (kid)", code=_CODE)
        with self._lock:
            now = time.monotonic()
            stale = now - self._fetched_at > self._max_age
            unknown = kid not in self._keys and now - self._missed_at >= self._refetch_interval
            if self.url is not None and (stale or unknown):
                if unknown and not stale:
                    self._missed_at = now
                self._keys = self._fetch()
                self._fetched_at = time.monotonic()
            found = self._keys.get(kid)
        if found is None:
            raise AuthenticationError(
                f"invalid access token: it is signed with key {kid!r}, which is not in the project's JWKS", code=_CODE
            )
        if found.algorithm_name != algorithm:
            raise AuthenticationError(
                f"invalid access token: key {kid!r} signs with {found.algorithm_name}, not {algorithm}", code=_CODE
            )
        return found

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        import httpx  # here, not at import: most clients never fetch a JWKS

        assert self.url is not None
        try:
            if self._http is not None:
                response = self._http.get(self.url, timeout=self._timeout)
            else:
                with httpx.Client(timeout=self._timeout) as http:
                    response = http.get(self.url)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"fetching the JWKS from {self.url} timed out: {exc}") from None
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot fetch the JWKS from {self.url}: {exc}") from None
        if response.status_code >= 500:
            raise APIConnectionError(f"fetching the JWKS from {self.url} failed: HTTP {response.status_code}")
        if response.status_code != 200:
            raise ConfigurationError(
                f"fetching the JWKS from {self.url} failed: HTTP {response.status_code} "
                "(check SUPABASE_JWKS_URL, or SUPABASE_URL it defaults from)"
            )
        return _parse_jwks(response.text, source=self.url)


def _parse_jwks(document: str | Mapping[str, Any], *, source: str) -> dict[str, jwt.PyJWK]:
    try:
        data = json.loads(document) if isinstance(document, str) else document
    except ValueError as exc:
        raise ConfigurationError(f"the JWKS from {source} is not JSON: {exc}") from None
    entries = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f'the JWKS from {source} has no "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("EC", "RSA"):
            continue
        algorithm = entry.get("alg") or {"EC": "ES256", "RSA": "RS256"}[entry["kty"]]
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(dict(entry), algorithm=algorithm)
        except jwt.PyJWTError:
            continue  # a key this library cannot use verifies nothing
    return keys


def verify_user_token(token: str, *, secret: str | None, jwks: JwksKeys | None) -> UUID:
    """The user a Supabase Auth access token is for, once its signature, expiry and audience are
    verified: HS256 tokens with the project's JWT `secret`, ES256/RS256 tokens with the key their kid
    names in `jwks`. The token's header only chooses which of these configured keys checks it.

    Raises:
        AuthenticationError: the token is malformed, forged, expired, not an authenticated user's, or
            signed in a way this configuration cannot verify.
        ConfigurationError: neither a JWT secret nor a JWKS is configured, or the JWKS is unreadable.
    """
    if secret is None and jwks is None:
        raise ConfigurationError(
            "cannot verify access tokens: set SUPABASE_JWT_SECRET (legacy HS256 tokens) and/or SUPABASE_JWKS_URL "
            "(or SUPABASE_URL, for the project's asymmetric signing keys)"
        )
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"invalid access token: {exc}", code=_CODE) from None
    except UnicodeEncodeError:  # a lone surrogate: no token holds one
        raise AuthenticationError("invalid access token: not valid Unicode", code=_CODE) from None
    algorithm = header.get("alg")
    key: str | jwt.PyJWK
    if algorithm == "HS256":
        if secret is None:
            raise AuthenticationError(
                "invalid access token: HS256 tokens are verified with SUPABASE_JWT_SECRET, which is not set", code=_CODE
            )
        key = secret
    elif algorithm in ASYMMETRIC_ALGORITHMS:
        if jwks is None:
            raise ConfigurationError(
                f"cannot verify a {algorithm} access token: set SUPABASE_JWKS_URL (or SUPABASE_URL: the keys are "
                "published at <SUPABASE_URL>/auth/v1/.well-known/jwks.json), or SUPABASE_JWKS to the JWKS itself"
            )
        kid = header.get("kid")
        key = jwks.key(kid if isinstance(kid, str) else None, algorithm)
    else:
        raise AuthenticationError(f"invalid access token: {algorithm!r} signatures are not accepted", code=_CODE)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[algorithm], audience="authenticated", options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the access token has expired", code=_CODE) from None
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"invalid access token: {exc}", code=_CODE) from None
    return _user_id(claims)


def _user_id(claims: Mapping[str, Any]) -> UUID:
    if claims.get("role") != "authenticated" or not claims.get("sub"):
        raise AuthenticationError("the access token is not an authenticated user's token", code=_CODE)
    try:
        return UUID(str(claims["sub"]))
    except ValueError:
        raise AuthenticationError("the access token's sub is not a user id", code=_CODE) from None
