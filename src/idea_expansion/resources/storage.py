"""`client.storage`: generated images in the `images` bucket, under `<user_id>/...`."""

from __future__ import annotations

import builtins

from .._exceptions import InvalidRequestError
from ..backends.storage import check_object_path
from ._base import AsyncResource, ClientContext, Operations, Steps, SyncResource, operation

__all__ = ["BUCKET", "AsyncStorage", "Storage"]

BUCKET = "images"


class _StorageOperations(Operations):
    """Files in the `images` bucket. Paths start with the owner's user id; the bucket's policies let a
    user write, list and delete only their own folder, and serve every object by public URL."""

    @operation
    def upload(self, path: str, data: bytes, *, content_type: str = "image/png", upsert: bool = False) -> Steps[str]:
        """Store `data` at `path` (e.g. f"{user_id}/{execution_id}/card.png"). Returns the path.

        Raises:
            PermissionDeniedError: the path is outside the caller's folder.
            ConflictError: the object exists and `upsert` is False.
            InvalidRequestError: a bad path, a file too large, or a content type the bucket refuses.
        """
        path = check_object_path(path)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidRequestError(f"data must be bytes, not {type(data).__name__}")
        if not isinstance(content_type, str) or not content_type:
            raise InvalidRequestError(f"content_type must be a MIME type such as image/png, not {content_type!r}")
        body, scope = bytes(data), self._scope

        def run(context: ClientContext) -> str:
            return context.storage_backend.upload(BUCKET, path, body, content_type, bool(upsert), scope)

        return (yield from self._effect(run))

    @operation
    def download(self, path: str) -> Steps[bytes]:
        """The object's bytes. Raises `NotFoundError` if it does not exist or is not the caller's."""
        path, scope = check_object_path(path), self._scope
        return (yield from self._effect(lambda context: context.storage_backend.download(BUCKET, path, scope)))

    @operation
    def remove(self, *paths: str) -> Steps[builtins.list[str]]:
        """Delete objects; returns the paths actually removed (others were missing or not the caller's)."""
        checked, scope = [check_object_path(p) for p in paths], self._scope
        return (yield from self._effect(lambda context: context.storage_backend.remove(BUCKET, checked, scope)))

    @operation
    def signed_url(self, path: str, *, expires_in: int = 3600) -> Steps[str]:
        """A URL that grants temporary access to the object."""
        path, scope = check_object_path(path), self._scope
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise InvalidRequestError(f"expires_in must be a positive number of seconds, not {expires_in!r}")
        return (
            yield from self._effect(lambda context: context.storage_backend.signed_url(BUCKET, path, expires_in, scope))
        )

    @operation
    def public_url(self, path: str) -> Steps[str]:
        """The object's permanent public URL (the bucket is public; listing is not)."""
        path = check_object_path(path)
        return (yield from self._effect(lambda context: context.storage_backend.public_url(BUCKET, path)))


class Storage(_StorageOperations, SyncResource):
    """Files in the `images` bucket (see `upload`)."""

    @property
    def available(self) -> bool:
        """Whether this client can store files. False only on direct Postgres to a Supabase project's own
        database without SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY: its files belong to Supabase Storage,
        which the client then cannot reach, so every upload would fail (ask before holding a credit for
        work that stores a file). The first answer may ask the database what it is; it is kept."""
        return self._client.storage_backend.available


class AsyncStorage(_StorageOperations, AsyncResource):
    """Files in the `images` bucket, on the async client (file work runs in a worker thread)."""

    @property
    def available(self) -> bool:
        """Whether this client can store files (see `Storage.available`). It is the sync twin's answer: the
        first read may build the twin and ask the database (blocking calls), so read it once at start-up
        or in a worker thread; it is kept."""
        return self._client.sync_context().storage_backend.available
