"""`client.storage`: generated images in the `images` bucket, under `<user_id>/...`."""

from __future__ import annotations

from ..backends.storage import check_object_path
from ._base import Resource

BUCKET = "images"


class Storage(Resource):
    """Files in the `images` bucket. Paths start with the owner's user id; the bucket's policies let a
    user write, list and delete only their own folder, and serve every object by public URL."""

    def upload(self, path: str, data: bytes, *, content_type: str = "image/png", upsert: bool = False) -> str:
        """Store `data` at `path` (e.g. f"{user_id}/{execution_id}/card.png"). Returns the path.

        Raises:
            PermissionDeniedError: the path is outside the caller's folder.
            ConflictError: the object exists and `upsert` is False.
            InvalidRequestError: a bad path, a file too large, or a content type the bucket refuses.
        """
        path = check_object_path(path)
        return self._client.storage_backend.upload(BUCKET, path, data, content_type, upsert, self._scope)

    def download(self, path: str) -> bytes:
        """The object's bytes. Raises `NotFoundError` if it does not exist or is not the caller's."""
        return self._client.storage_backend.download(BUCKET, check_object_path(path), self._scope)

    def remove(self, *paths: str) -> list[str]:
        """Delete objects; returns the paths actually removed (others were missing or not the caller's)."""
        checked = [check_object_path(p) for p in paths]
        return self._client.storage_backend.remove(BUCKET, checked, self._scope)

    def signed_url(self, path: str, *, expires_in: int = 3600) -> str:
        """A URL that grants temporary access to the object."""
        return self._client.storage_backend.signed_url(BUCKET, check_object_path(path), expires_in, self._scope)

    def public_url(self, path: str) -> str:
        """The object's permanent public URL (the bucket is public; listing is not)."""
        return self._client.storage_backend.public_url(BUCKET, check_object_path(path))
