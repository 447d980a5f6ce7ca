"""`client.users`: profiles, and the GitHub sign-in that creates them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID

from .._exceptions import ConflictError, IdeaExpansionError, NotFoundError, PermissionDeniedError
from ..backends._base import Delete, Eq, Insert, Select, Update
from ..types import GitHubSignIn, Provider, User, UserCreate, UserUpdate
from ..types.ids import IdLike, parse_id
from ..types.params import email_key, parse_params
from ._base import AsyncResource, ClientContext, Effect, Operations, Steps, SyncResource, operation, to_model
from .credentials import _CredentialOperations

T = TypeVar("T")


@runtime_checkable
class AuthAdmin(Protocol):
    """A backend fronted by Supabase Auth (REST): people are created there first, so that their profile
    id is their auth id. Direct Postgres has no auth server: the database assigns the profile id, and the
    auth.users trigger links that profile when the person later confirms the address in Supabase Auth
    (with an auth user created after the profile: an older one may hold a squatter's password)."""

    def create_auth_user(self, email: str, *, name: str | None = None) -> UUID: ...

    def delete_auth_user(self, user_id: UUID) -> None: ...

    def find_auth_user(self, email: str) -> tuple[UUID, bool] | None:
        """The auth user holding `email`: (id, address confirmed), or None."""
        ...


class _UserOperations(Operations):
    """Profiles (`public.users`). Users read and rename themselves; creation and deletion are the service's.

    A profile belongs to a confirmed e-mail address: Supabase Auth users get theirs (by the auth.users
    trigger) only once they confirm it, and the one person behind an address has one id. On REST the
    service creates people in Supabase Auth (admin API, address confirmed by the service), so the profile
    id is the auth id from the start; on direct Postgres the profile gets its own id, which becomes the
    auth id when the same address is later confirmed in Supabase Auth by an auth user created after
    the profile (everything the profile owns follows, except stored credentials, which are sealed to
    the old id and must be stored again). Addresses are printable ASCII.
    """

    @operation
    def sign_in_with_github(
        self,
        *,
        email: str,
        login: str,
        access_token: str,
        name: str | None = None,
        timezone: str | None = None,
    ) -> Steps[User]:
        """Create the user on first sign-in (the database gives them 5 free credits), update their name
        (and time zone, when given) later, and store the GitHub token encrypted in `credentials`.
        Service client only.

        `email` must be an address GitHub reports as verified for this account: the sign-in reaches the
        profile of that address, which belongs to whoever confirmed it. The profile of an address is
        found by e-mail; profiles exist only for confirmed addresses (an unconfirmed Supabase Auth
        sign-up holds none), so nothing is ever merged into an identity that did not prove the address.
        A new person is created as `create` creates them: on REST in Supabase Auth first (the profile id
        is the auth id), replacing an unconfirmed sign-up that holds the address; on direct Postgres with
        an id of their own, linked when the address is later confirmed by a newer Supabase Auth sign-up.
        If a confirmed Supabase Auth user holds the address without a profile, the sign-in makes a
        profile of its own, which the database never links to that older identity.

        Raises:
            InvalidRequestError: a malformed e-mail address or an unknown time zone.
            ConfigurationError: ENCRYPTION_KEY is missing.
            PermissionDeniedError: called from a user client.
        """
        params = parse_params(
            GitHubSignIn, email=email, login=login, access_token=access_token, name=name, timezone=timezone or "UTC"
        )
        encryptor = self._client.encryptor  # fail on a missing key before writing anything
        if self._uses_auth_admin() and not (yield Select("users", [Eq("email", params.email)], columns=("id",))):
            # Held by a confirmed auth user, or one too many look-alikes hide (ConflictError): the profile
            # below is the address's, never linked to that older identity.
            with contextlib.suppress(ConflictError):
                yield _auth_effect(_create_auth_user, params.email, params.name or params.login)
        row: dict[str, Any] = {"email": params.email, "name": params.name or params.login}
        if timezone is not None:  # an existing user's chosen time zone stays unless one is given
            row["timezone"] = params.timezone
        user = yield from self._one(User, Insert("users", [row], on_conflict=("email",)), "user")
        credentials = _CredentialOperations(self._client)
        yield from credentials._store(Provider.GITHUB, params.access_token, user.id, encryptor)
        return user

    @operation
    def create(self, *, email: str, name: str | None = None, timezone: str = "UTC") -> Steps[User]:
        """Create a user (service client), whose e-mail address the service vouches for. The database
        creates their usage row with 5 free credits.

        On REST the user is created in Supabase Auth (admin API, address confirmed), and the profile
        the database makes for them has their auth id. An unconfirmed sign-up that holds the address is
        deleted first: Supabase Auth keeps its password, which may be a squatter's, and the owner's
        click on its confirmation link would otherwise hand them that account. On direct Postgres the
        profile gets an id of its own, which becomes the auth id if the person later signs up in
        Supabase Auth and confirms the same address (an auth user older than the profile never takes it).

        Raises:
            ConflictError: the e-mail address is taken, in Supabase Auth by a confirmed user (code 23505
                on both backends).
            InvalidRequestError: a malformed or non-ASCII e-mail address.
            PermissionDeniedError: called from a user client.
        """
        params = parse_params(UserCreate, email=email, name=name, timezone=timezone)
        if not self._uses_auth_admin():
            return (yield from self._one(User, Insert("users", [params.model_dump()]), "user"))
        user_id: UUID = yield _auth_effect(_create_auth_user, params.email, params.name)
        try:
            values = {"name": params.name, "timezone": params.timezone}
            rows = yield Update("users", values, [Eq("id", user_id)])
            if not rows:
                raise NotFoundError(
                    f"Supabase Auth created user {user_id}, but the database made no profile for it: are the "
                    "migrations applied (the auth.users trigger creates profiles)?",
                    code="PGRST116",
                )
            return to_model(User, rows[0])
        except BaseException as exc:
            try:  # no person half-created: the auth user goes, and its profile with it
                yield _auth_effect(_delete_auth_user, user_id)
            except IdeaExpansionError as cleanup:
                exc.add_note(f"the Supabase Auth user {user_id} could not be deleted: {cleanup}")
            raise

    def _uses_auth_admin(self) -> bool:
        """Whether people are made in Supabase Auth first (the REST backend); only the service client may."""
        if self._client.backend_kind != "rest":
            return False
        if self._scope.role != "service_role":
            raise PermissionDeniedError("only the service client creates users", code="42501")
        return True

    @operation
    def get(self, user_id: IdLike) -> Steps[User]:
        """A user by id. Raises `NotFoundError` (also for another user's id on a user client)."""
        return (yield from self._one(User, Select("users", [Eq("id", parse_id(user_id, "user id"))]), "user"))

    @operation
    def me(self) -> Steps[User]:
        """The user this client acts as."""
        return (yield from self.get.steps(self._owner(None)))

    @operation
    def get_by_email(self, email: str) -> Steps[User]:
        """A user by e-mail address (case-insensitive)."""
        key = email_key(email) if isinstance(email, str) else None
        if key is None:  # no stored address is anything but ASCII
            raise NotFoundError(f"user {email!r} not found", code="PGRST116")
        return (yield from self._one(User, Select("users", [Eq("email", key)]), f"user {email}"))

    @operation
    def update(self, user_id: IdLike, *, name: str | None = None, timezone: str | None = None) -> Steps[User]:
        """Change a user's name and/or time zone."""
        params = parse_params(UserUpdate, name=name, timezone=timezone)
        values: dict[str, Any] = params.model_dump(exclude_none=True)
        if not values:
            return (yield from self.get.steps(user_id))
        return (yield from self._one(User, Update("users", values, [Eq("id", parse_id(user_id, "user id"))]), "user"))

    @operation
    def delete(self, user_id: IdLike) -> Steps[None]:
        """Delete a user and everything they own (service client).

        Their payment receipts and charged credits stay, anonymised, for the books: the database moves
        them to a fresh random id that names no one. A later sign-up with the same e-mail address gets
        back only the free credits this account had left, never a new 5.
        """
        uid = parse_id(user_id, "user id")
        in_auth = False
        if self._uses_auth_admin():  # REST: the Auth user goes first (its trigger deletes the profile), so
            try:  # the address is free for a later create instead of stuck on email_exists
                yield _auth_effect(_delete_auth_user, uid)
                in_auth = True
            except NotFoundError:  # a profile without an Auth identity
                pass
        if not (yield Delete("users", [Eq("id", uid)])) and not in_auth:
            raise NotFoundError("user not found", code="PGRST116")


class Users(_UserOperations, SyncResource):
    """Profiles (`public.users`). Users read and rename themselves; creation and deletion are the service's."""


class AsyncUsers(_UserOperations, AsyncResource):
    """Profiles (`public.users`), on the async client."""


def _auth_effect(action: Callable[..., T], *args: Any) -> Effect[T]:
    """A call to Supabase Auth's admin API (the REST backend's), as a step."""

    def run(context: ClientContext) -> T:
        backend = context.backend
        if not isinstance(backend, AuthAdmin):  # pragma: no cover - _uses_auth_admin checked the kind
            raise IdeaExpansionError(f"{type(backend).__name__} has no Supabase Auth admin API")
        return action(backend, *args)

    return Effect(run)


def _delete_auth_user(auth: AuthAdmin, user_id: UUID) -> None:
    auth.delete_auth_user(user_id)


def _create_auth_user(auth: AuthAdmin, email: str, name: str | None) -> UUID:
    """Create a confirmed Supabase Auth user for an address the service vouches for. An unconfirmed
    sign-up holding the address is deleted first (its password may be a squatter's, and confirming it
    would hand them the person's account); a confirmed holder keeps it (ConflictError).

    If the holder is confirmed between the look-up and the delete, it is deleted all the same, and with
    it the profile that confirmation gave it (a new, empty one, unless a direct-Postgres profile of the
    address predates the holder and was linked to it)."""
    try:
        return auth.create_auth_user(email, name=name)
    except ConflictError:
        holder = auth.find_auth_user(email)
        if holder is not None:
            holder_id, confirmed = holder
            if confirmed:
                raise
            with contextlib.suppress(NotFoundError):  # gone meanwhile: the address is free
                auth.delete_auth_user(holder_id)
    return auth.create_auth_user(email, name=name)
