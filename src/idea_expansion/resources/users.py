"""`client.users`: profiles, and the GitHub sign-in that creates them."""

from __future__ import annotations

from typing import Any

from .._exceptions import NotFoundError
from ..backends._base import Delete, Eq, Insert, Select, Update
from ..types import GitHubSignIn, Provider, User, UserCreate, UserUpdate
from ..types.ids import IdLike, parse_id
from ..types.params import parse_params
from ._base import Resource
from .credentials import Credentials


class Users(Resource):
    """Profiles (`public.users`). Users read and rename themselves; creation and deletion are the service's."""

    def sign_in_with_github(
        self,
        *,
        email: str,
        login: str,
        access_token: str,
        name: str | None = None,
        timezone: str | None = None,
    ) -> User:
        """Create the user on first sign-in (the database gives them 5 free credits), update their name
        (and time zone, when given) later, and store the GitHub token encrypted in `credentials`.
        Service client only.

        Raises:
            InvalidRequestError: a malformed e-mail address or an unknown time zone.
            ConfigurationError: ENCRYPTION_KEY is missing.
            PermissionDeniedError: called from a user client.
        """
        params = parse_params(
            GitHubSignIn, email=email, login=login, access_token=access_token, name=name, timezone=timezone or "UTC"
        )
        encryptor = self._client.encryptor  # fail on a missing key before writing anything
        row: dict[str, Any] = {"email": params.email, "name": params.name or params.login}
        if timezone is not None:  # an existing user's chosen time zone stays unless one is given
            row["timezone"] = params.timezone
        user = self._one(User, Insert("users", [row], on_conflict=("email",)), "user")
        Credentials(self._client).set(Provider.GITHUB, params.access_token, user_id=user.id, _encryptor=encryptor)
        return user

    def create(self, *, email: str, name: str | None = None, timezone: str = "UTC") -> User:
        """Create a user (service client). The database creates their usage row with 5 free credits.

        Raises:
            ConflictError: the e-mail address is taken.
        """
        params = parse_params(UserCreate, email=email, name=name, timezone=timezone)
        return self._one(User, Insert("users", [params.model_dump()]), "user")

    def get(self, user_id: IdLike) -> User:
        """A user by id. Raises `NotFoundError` (also for another user's id on a user client)."""
        return self._one(User, Select("users", [Eq("id", parse_id(user_id, "user id"))]), "user")

    def me(self) -> User:
        """The user this client acts as."""
        return self.get(self._owner(None))

    def get_by_email(self, email: str) -> User:
        """A user by e-mail address (case-insensitive)."""
        return self._one(User, Select("users", [Eq("email", email.strip().lower())]), f"user {email}")

    def update(self, user_id: IdLike, *, name: str | None = None, timezone: str | None = None) -> User:
        """Change a user's name and/or time zone."""
        params = parse_params(UserUpdate, name=name, timezone=timezone)
        values: dict[str, Any] = params.model_dump(exclude_none=True)
        if not values:
            return self.get(user_id)
        return self._one(User, Update("users", values, [Eq("id", parse_id(user_id, "user id"))]), "user")

    def delete(self, user_id: IdLike) -> None:
        """Delete a user and everything they own (service client)."""
        if not self._rows(Delete("users", [Eq("id", parse_id(user_id, "user id"))])):
            raise NotFoundError("user not found", code="PGRST116")
