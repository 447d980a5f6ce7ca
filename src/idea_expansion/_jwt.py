"""Short-lived user tokens, as Supabase Auth would issue them (HS256 with the project's JWT secret)."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import jwt

from ._exceptions import AuthenticationError

__all__ = ["mint_user_token", "user_id_from_token"]


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


def user_id_from_token(token: str, *, secret: str | None) -> UUID:
    """The user a token is for. With `secret` the signature, expiry and audience are verified (the
    direct-Postgres backend trusts nothing else); without it the token is only read, because the
    Supabase API verifies it on every request."""
    try:
        claims: dict[str, Any]
        if secret is None:
            claims = jwt.decode(token, options={"verify_signature": False})
        else:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], audience="authenticated", options={"require": ["exp", "sub"]}
            )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the access token has expired", code="PGRST301") from None
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"invalid access token: {exc}", code="PGRST301") from None
    if claims.get("role") != "authenticated" or not claims.get("sub"):
        raise AuthenticationError("the access token is not an authenticated user's token", code="PGRST301")
    try:
        return UUID(str(claims["sub"]))
    except ValueError:
        raise AuthenticationError("the access token's sub is not a user id", code="PGRST301") from None
