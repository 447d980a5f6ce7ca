"""File storage for the `images` bucket: Supabase Storage over REST, or a local directory beside a
direct Postgres database. Both enforce the same rules the same way: the object's row in
`storage.objects` is written or read as the caller, so the bucket's RLS policies decide.

A direct Postgres database that is a Supabase project's own keeps its files in Supabase Storage, whose
API writes those rows: `PostgresStorage` sends them there (`SupabaseStorage`) when SUPABASE_URL and
SUPABASE_SERVICE_ROLE_KEY are set, and refuses them otherwise (`available` is then False)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from psycopg.types.json import Jsonb

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .._exceptions import ConfigurationError, InvalidRequestError, NotFoundError, StorageError
from ..types.params import is_utf8
from ._base import Scope
from .postgres import PostgresBackend

if TYPE_CHECKING:  # the REST stack loads only when a REST client is built, or a file goes to Supabase Storage
    from .rest import RestBackend

__all__ = [
    "LocalStorage",
    "PostgresStorage",
    "RestStorage",
    "StorageBackend",
    "SupabaseStorage",
    "check_object_path",
    "supabase_public_url",
]


def check_object_path(path: str) -> str:
    """Reject paths that could escape a folder or that Storage would refuse."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidRequestError(f"invalid storage path {path!r}: use a relative path such as '<user_id>/image.png'")
    if not is_utf8(path):  # a lone surrogate: no file name, URL or database row can hold it
        raise InvalidRequestError(f"invalid storage path {path!r}: not valid Unicode")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidRequestError(f"invalid storage path {path!r}: empty, '.' or '..' segments are not allowed")
    if len(path) > 1024:
        raise InvalidRequestError("invalid storage path: longer than 1024 characters")
    return path


def supabase_public_url(url: str, bucket: str, path: str) -> str:
    """An object's permanent URL in a public bucket of the Supabase project at `url`."""
    return f"{url.rstrip('/')}/storage/v1/object/public/{quote(bucket)}/{quote(path, safe='/')}"


class StorageBackend(Protocol):
    @property
    def available(self) -> bool:
        """Whether files can be stored at all (see `PostgresStorage`)."""
        ...

    def upload(self, bucket: str, path: str, data: bytes, content_type: str, upsert: bool, scope: Scope) -> str: ...
    def download(self, bucket: str, path: str, scope: Scope) -> bytes: ...
    def remove(self, bucket: str, paths: list[str], scope: Scope) -> list[str]: ...
    def signed_url(self, bucket: str, path: str, expires_in: int, scope: Scope) -> str: ...
    def public_url(self, bucket: str, path: str) -> str: ...


class RestStorage:
    """Supabase Storage (/storage/v1) through supabase-py's storage3."""

    def __init__(self, backend: RestBackend) -> None:
        self._backend = backend

    @property
    def available(self) -> bool:
        return True

    def upload(self, bucket: str, path: str, data: bytes, content_type: str, upsert: bool, scope: Scope) -> str:
        options: Any = {"content-type": content_type, "upsert": "true" if upsert else "false"}
        self._backend.storage_call(scope, bucket, lambda api: api.upload(path, data, options))
        return path

    def download(self, bucket: str, path: str, scope: Scope) -> bytes:
        data: bytes = self._backend.storage_call(scope, bucket, lambda api: api.download(path))
        return data

    def remove(self, bucket: str, paths: list[str], scope: Scope) -> list[str]:
        removed = self._backend.storage_call(scope, bucket, lambda api: api.remove(paths))
        return [item["name"] for item in removed]

    def signed_url(self, bucket: str, path: str, expires_in: int, scope: Scope) -> str:
        response = self._backend.storage_call(scope, bucket, lambda api: api.create_signed_url(path, expires_in))
        return str(response.get("signedURL") or response.get("signedUrl"))

    def public_url(self, bucket: str, path: str) -> str:
        return supabase_public_url(self._backend.url, bucket, path)


class SupabaseStorage:
    """Supabase Storage beside a direct Postgres database: rows go to the database, files through the
    Storage API of the project at `url` (storage3, over `RestStorage` and the `RestBackend` that
    `make_backend` builds, with the project's keys).

    Each scope sends what the REST backend sends: the service role its key; a user the anon key as
    `apikey` and their token (the access token the view was made with, or one minted with the JWT
    secret) as `Authorization`, so the bucket's policies decide as they do for the REST backend.
    `make_backend` is called on the first file request, not before: a client that stores no file never
    imports the REST stack (supabase-py, httpx) nor builds an HTTP client. `public_url` needs neither.

    `injected_http_client`: the backend sends through an HTTP client the caller passed in, which a
    worker process cannot rebuild from settings (so worker processes refuse such a client).
    """

    def __init__(
        self, url: str, *, make_backend: Callable[[], RestBackend], injected_http_client: bool = False
    ) -> None:
        self.url = url.rstrip("/")
        self.injected_http_client = injected_http_client
        self._make_backend = make_backend
        self._lock = threading.Lock()
        self._backend: RestBackend | None = None
        self._storage: RestStorage | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SupabaseStorage(url={self.url!r})"

    @property
    def available(self) -> bool:
        return True

    def _rest(self) -> RestStorage:
        with self._lock:
            if self._closed:
                raise ConfigurationError("this client is closed")
            if self._storage is None:
                self._backend = self._make_backend()
                self._storage = RestStorage(self._backend)
            return self._storage

    def upload(self, bucket: str, path: str, data: bytes, content_type: str, upsert: bool, scope: Scope) -> str:
        return self._rest().upload(bucket, path, data, content_type, upsert, scope)

    def download(self, bucket: str, path: str, scope: Scope) -> bytes:
        return self._rest().download(bucket, path, scope)

    def remove(self, bucket: str, paths: list[str], scope: Scope) -> list[str]:
        return self._rest().remove(bucket, paths, scope)

    def signed_url(self, bucket: str, path: str, expires_in: int, scope: Scope) -> str:
        return self._rest().signed_url(bucket, path, expires_in, scope)

    def public_url(self, bucket: str, path: str) -> str:
        return supabase_public_url(self.url, bucket, path)

    def close(self) -> None:
        """Close the HTTP client, if the first file request built one (and refuse requests from now on)."""
        with self._lock:
            self._closed, backend, self._backend, self._storage = True, self._backend, None, None
        if backend is not None:
            backend.close()


class LocalStorage:
    """Files in a local directory; their metadata rows in `storage.objects`, written as the caller.

    Each call is one request of the backend (one round trip). An upload writes the file to a staging
    folder first, then the row; only after the row is committed does the file take the object's
    name, under a per-object file lock that a remove takes too, so the file always matches the row.
    A row the caller's policies refuse, or any other failure, leaves no file and never touches the
    object's existing file; should the file fail to take its name after the row was committed, the
    row is put back as it was. Signed URLs are plain file URLs: there is no server.

    What the file system refuses (permissions, a full disk, a root that is not a folder) is a
    `StorageError` naming the object and the folder, never a bare `OSError`. Objects are files here,
    so one object cannot be a folder of others (`a.png` and `a.png/b.png`), which Supabase Storage
    allows: such an upload is refused with `StorageError` before anything is written.
    """

    def __init__(self, backend: PostgresBackend, root: Path) -> None:
        self._backend = backend
        self.root = root
        self._limits: dict[str, tuple[float, int | None, list[str] | None]] = {}

    @property
    def on_supabase(self) -> bool:
        """Whether the database is a Supabase project's own (`database_kind() == "supabase"`)."""
        return self._backend.database_kind() == "supabase"

    @property
    def available(self) -> bool:
        """False on a Supabase project's database, whose files this folder cannot hold."""
        return not self.on_supabase

    def _ensure_not_supabase(self) -> None:
        # On a real Supabase database, storage.objects belongs to Supabase Storage: rows written here
        # would point at files only this machine has. Its API must store them (see PostgresStorage).
        if self.on_supabase:
            raise ConfigurationError(
                "this is a Supabase database, whose files belong to Supabase Storage, not a local directory: "
                "set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY beside DATABASE_URL (rows stay direct, files go "
                "through the Storage API)"
            )

    def _file(self, bucket: str, path: str) -> Path:
        return self.root / bucket / path

    def upload(self, bucket: str, path: str, data: bytes, content_type: str, upsert: bool, scope: Scope) -> str:
        self._ensure_not_supabase()
        metadata = Jsonb({"mimetype": content_type, "size": len(data)})
        conflict = (
            "on conflict (bucket_id, name) do update set metadata = excluded.metadata, updated_at = now()"
            if upsert
            else ""
        )
        self._check_bucket_limits(bucket, len(data), content_type)
        target = self._file(bucket, path)
        with self._file_errors("store", path):
            self._check_room(bucket, path)
            staged = self._stage(data)
        try:
            # The object's lock is held from the row to the rename: concurrent uploads (and a remove) of
            # one object are applied in the order their rows were, so the file is always the row's.
            with self._file_errors("store", path), self._locked([(bucket, path)]):
                (written,) = self._backend.query(
                    # `previous` reads the row as it was before this statement, to put it back if the
                    # file cannot follow (one statement: still one round trip).
                    "with previous as (select metadata from storage.objects where bucket_id = %s and name = %s) "
                    "insert into storage.objects (bucket_id, name, owner, metadata) "
                    f"values (%s, %s, auth.uid(), %s) {conflict} "
                    "returning not exists (select from previous) as created, "
                    "(select metadata from previous) as previous_metadata",
                    (bucket, path, bucket, path, metadata),
                    scope,
                )
                try:
                    # An atomic rename (the staging folder is on the same file system): readers see the old
                    # file or the new one, never a part. The folder is made only now, for a stored row.
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staged, target)
                except OSError:
                    self._restore_row(bucket, path, written)
                    raise
        except BaseException:
            with suppress(OSError):  # the error on its way out says what failed; this is only tidying
                staged.unlink(missing_ok=True)
            raise
        return path

    def _check_room(self, bucket: str, path: str) -> None:
        """Refuse, before anything is written, an object whose file cannot exist beside the others: one
        whose name is a folder of objects, or that lies inside another object's name."""
        folder = self.root / bucket
        for parent in list(reversed(Path(path).parents))[1:]:
            if (folder / parent).exists() and not (folder / parent).is_dir():
                raise StorageError(
                    f"cannot store {path!r}: {parent.as_posix()!r} is an object, and the local store keeps "
                    "objects as files, so it cannot also be a folder (Supabase Storage can)",
                    code="500",
                )
        if (folder / path).is_dir():
            raise StorageError(
                f"cannot store {path!r}: it is a folder of other objects in the local store, which keeps "
                "objects as files (Supabase Storage can hold both)",
                code="500",
            )

    def _restore_row(self, bucket: str, path: str, written: dict[str, Any]) -> None:
        """The file could not take the object's name after its row was committed: put the row back as it
        was (none, or its old metadata), so that the row still describes the file. With the store's own
        rights, as the caller's may not include deleting what they may insert."""
        service = Scope("service_role")
        if written["created"]:
            self._backend.query(
                "delete from storage.objects where bucket_id = %s and name = %s", (bucket, path), service
            )
            return
        previous = written["previous_metadata"]
        self._backend.query(
            "update storage.objects set metadata = %s where bucket_id = %s and name = %s",
            (None if previous is None else Jsonb(previous), bucket, path),
            service,
        )

    @contextmanager
    def _file_errors(self, action: str, path: str) -> Iterator[None]:
        """What the file system refused, as a `StorageError` that names the object and the folder."""
        try:
            yield
        except OSError as exc:
            raise StorageError(
                f"local storage could not {action} {path!r} in {self.root}: {exc}",
                code="500",
                details=type(exc).__name__,
            ) from exc

    def _bucket_limits(self, bucket: str) -> tuple[int | None, list[str] | None]:
        # Like the Storage server, read the bucket's settings with its own rights, not the caller's;
        # kept for a minute, since buckets are configured by migrations, not per request.
        cached = self._limits.get(bucket)
        if cached is not None and time.monotonic() - cached[0] < 60:
            return cached[1], cached[2]
        rows = self._backend.query(
            "select file_size_limit, allowed_mime_types from storage.buckets where id = %s",
            (bucket,),
            Scope("service_role"),
        )
        if not rows:
            raise NotFoundError(f"bucket {bucket!r} not found", code="404")
        row = rows[0]
        self._limits[bucket] = (time.monotonic(), row["file_size_limit"], row["allowed_mime_types"])
        return row["file_size_limit"], row["allowed_mime_types"]

    def _check_bucket_limits(self, bucket: str, size: int, content_type: str) -> None:
        limit, allowed = self._bucket_limits(bucket)
        if limit is not None and size > limit:
            raise InvalidRequestError(f"the object is {size} bytes; bucket {bucket!r} allows {limit}", code="413")
        if allowed and content_type not in allowed:
            raise InvalidRequestError(
                f"content type {content_type} is not allowed in bucket {bucket!r} ({', '.join(allowed)})",
                code="415",
            )

    def download(self, bucket: str, path: str, scope: Scope) -> bytes:
        self._ensure_not_supabase()
        rows = self._backend.query(
            "select 1 from storage.objects where bucket_id = %s and name = %s", (bucket, path), scope
        )
        if not rows:
            raise NotFoundError(f"object {path!r} not found (or not visible to this client)", code="404")
        with self._file_errors("read", path):
            try:
                return self._file(bucket, path).read_bytes()
            except FileNotFoundError:
                raise StorageError(f"object {path!r} has a row but no file under {self.root}", code="500") from None

    def remove(self, bucket: str, paths: list[str], scope: Scope) -> list[str]:
        self._ensure_not_supabase()
        with self._file_errors("remove", ", ".join(paths)), self._locked([(bucket, name) for name in paths]):
            rows = self._backend.query(
                "delete from storage.objects where bucket_id = %s and name = any(%s) returning name",
                (bucket, paths),
                scope,
            )
            removed = [r["name"] for r in rows]
            left: list[str] = []
            for name in removed:
                try:
                    self._file(bucket, name).unlink(missing_ok=True)
                except OSError as exc:  # the rows are gone: delete the other files, then say which stayed
                    left.append(f"{name!r} ({exc})")
        if left:
            raise StorageError(
                f"removed {len(removed)} object(s), but local storage in {self.root} could not delete the "
                f"file of {', '.join(left)}: the objects are gone, their files are not",
                code="500",
            )
        return removed

    def signed_url(self, bucket: str, path: str, expires_in: int, scope: Scope) -> str:
        self.download(bucket, path, scope)  # the same visibility check a signed URL request makes
        return self.public_url(bucket, path)

    def public_url(self, bucket: str, path: str) -> str:
        with self._file_errors("locate", path):
            return self._file(bucket, path).resolve().as_uri()

    def _stage(self, data: bytes) -> Path:
        """`data` in a new file under the root's staging folder (a fresh name: mkstemp never opens an
        existing file), so a refused upload creates nothing beside the objects."""
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=staging, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return Path(temp)

    @contextmanager
    def _locked(self, objects: list[tuple[str, str]]) -> Iterator[None]:
        """Exclusive locks on these objects for every process using this folder (flock; Windows has none
        and goes without). Taken in one order, so two calls never wait for each other in a circle."""
        if fcntl is None:
            yield
            return
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        names = sorted({hashlib.sha256(f"{bucket}\0{path}".encode()).hexdigest() for bucket, path in objects})
        with ExitStack() as held:
            for name in names:
                handle = held.enter_context(open(locks / name, "a+b"))
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield


class PostgresStorage:
    """The files of a client on direct Postgres: in the local folder `local`, except on a database that
    is a Supabase project's own (`database_kind() == "supabase"`, asked once), where they go through
    `supabase` (Supabase Storage: SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY were set) or, without it,
    are refused with `ConfigurationError` (`available` is then False, so callers can refuse earlier).

    A database that is not Supabase's (plain, or bootstrapped by `idea-expansion db reset`) keeps its
    files in the folder even when SUPABASE_URL is set: another project's Storage cannot hold them.
    """

    def __init__(self, local: LocalStorage, supabase: SupabaseStorage | None = None) -> None:
        self.local = local
        self.supabase = supabase

    def __repr__(self) -> str:
        return f"PostgresStorage(root={str(self.root)!r}, supabase={self.supabase!r})"

    @property
    def root(self) -> Path:
        """The local folder (what a worker process is rebuilt with)."""
        return self.local.root

    @property
    def injected_http_client(self) -> bool:
        """Whether Supabase Storage is reached through an HTTP client passed in (not rebuilt from settings)."""
        return self.supabase is not None and self.supabase.injected_http_client

    def _target(self) -> StorageBackend:
        if self.supabase is not None and self.local.on_supabase:
            return self.supabase
        return self.local

    @property
    def available(self) -> bool:
        return self._target().available

    def upload(self, bucket: str, path: str, data: bytes, content_type: str, upsert: bool, scope: Scope) -> str:
        return self._target().upload(bucket, path, data, content_type, upsert, scope)

    def download(self, bucket: str, path: str, scope: Scope) -> bytes:
        return self._target().download(bucket, path, scope)

    def remove(self, bucket: str, paths: list[str], scope: Scope) -> list[str]:
        return self._target().remove(bucket, paths, scope)

    def signed_url(self, bucket: str, path: str, expires_in: int, scope: Scope) -> str:
        return self._target().signed_url(bucket, path, expires_in, scope)

    def public_url(self, bucket: str, path: str) -> str:
        return self._target().public_url(bucket, path)

    def close(self) -> None:
        if self.supabase is not None:
            self.supabase.close()
