"""Store URIs: one filesystem layer for the landing store, pipeline artifacts and ledgers.

A store is a root URI, ``file:///abs/folder`` (the default, no server) or ``s3://bucket/prefix``
(any S3-compatible server: AWS S3, versitygw, ...), and every read and write goes through
`fsspec <https://filesystem-spec.readthedocs.io>`_ (``s3fs`` for ``s3://``). Keys are relative,
``/``-separated paths under the root.

What object storage offers, and what this module relies on:

- **A PUT is atomic**: readers see the whole object or nothing, so a writer killed mid-upload
  never leaves a half object behind (the local store writes a temporary file and renames it).
- **Conditional create** (``PUT`` with ``If-None-Match: *``, answered ``412`` when the key exists;
  AWS S3 since 2024-08, versitygw >= 1.x): :meth:`Store.put_if_absent` is the commit point of a
  landed part or a ledger claim. Two writers of the same key: exactly one wins.
- **Compare-and-swap** (``PUT`` with ``If-Match: <etag>``): :meth:`Store.replace_if_match` updates
  a small document (a ledger) only if nobody changed it since it was read.
- **Strongly consistent LIST** after a PUT (AWS S3 since 2020-12, versitygw: a POSIX folder).

There is no atomic rename on S3, and none is used.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

#: largest document :meth:`Store.replace_if_match` writes (one PUT; larger ones would go multipart).
MAX_CAS_BYTES = 50 * 2**20
#: reads again after a GET whose body and checksum disagree (an overwrite raced it).
TORN_READ_RETRIES = 3


class StoreUnavailable(OSError):
    """The store could not be reached or refused the request; the message names the store and key."""


def s3_filesystem(endpoint_url: str | None = None) -> AbstractFileSystem:
    """An ``s3fs`` filesystem without listing caches (other writers add keys at any time).

    Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    a profile, or a pod's web identity); ``endpoint_url`` selects an S3-compatible server.
    """
    import s3fs

    client: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return s3fs.S3FileSystem(
        use_listings_cache=False,
        skip_instance_cache=True,
        client_kwargs=client,
        config_kwargs={"retries": {"max_attempts": 3, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 30},
    )


class Store:
    """Read, list and (conditionally) write objects under one root URI."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None) -> None:
        parts = urlsplit(uri)
        scheme = parts.scheme or "file"
        if scheme == "file":
            self.fs: AbstractFileSystem = LocalFileSystem()
            self.root = str(Path(parts.path if parts.scheme else uri).resolve())
            self.uri = f"file://{self.root}"
        elif scheme == "s3":
            if not parts.netloc:
                raise ValueError(f"store URI {uri!r} names no bucket: use s3://bucket/prefix")
            self.fs = s3_filesystem(endpoint_url)
            self.root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
            self.uri = f"s3://{self.root}"
        else:
            raise ValueError(f"store URI {uri!r}: the scheme must be file:// or s3://")
        self.local = scheme == "file"

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # --- names -----------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The filesystem path of ``key`` (what ``self.fs`` takes)."""
        clean = PurePosixPath(key.strip("/"))
        if not key.strip("/") or ".." in clean.parts:
            raise ValueError(f"bad store key {key!r}")
        return f"{self.root}/{clean}"

    def url(self, key: str) -> str:
        """The full URI of ``key`` (what MLflow and humans are shown)."""
        return f"{self.uri}/{PurePosixPath(key.strip('/'))}"

    # --- reading ---------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        """The object's content; ``FileNotFoundError`` when it does not exist."""
        with self._errors(key):
            return self._cat(key)

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several objects at once (concurrent GETs on S3), by key."""
        if not keys:
            return {}
        paths = {self.path(k): k for k in keys}
        with self._errors(keys[0]):
            found = self.fs.cat(list(paths), on_error="raise")
        return {paths[p]: bytes(data) for p, data in found.items()}

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """Content and a version tag for :meth:`replace_if_match` (the ETag on S3, a hash locally).

        The tag is read before the content: if the object changes in between, the tag is stale and
        the following ``replace_if_match`` fails, as it must.
        """
        if self.local:
            data = self.read_bytes(key)
            return data, _digest(data)
        with self._errors(key):
            tag = str(self.fs.info(self.path(key))["ETag"])
            return self._cat(key), tag

    @contextmanager
    def open(self, key: str) -> Iterator[Any]:
        """A seekable binary file of the object, for partial reads (a Parquet footer: ranged GETs on S3)."""
        with self._errors(key), self.fs.open(self.path(key), "rb") as f:
            yield f

    def exists(self, key: str) -> bool:
        with self._errors(key):
            return bool(self.fs.exists(self.path(key)))

    def list_keys(self, prefix: str = "", suffix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursively) ending with ``suffix``, sorted; [] when there are none."""
        base = self.path(prefix) if prefix.strip("/") else self.root
        with self._errors(prefix or "/"):
            try:
                found = self.fs.find(base)
            except FileNotFoundError:
                return []
        start = len(self.root) + 1
        return sorted(p[start:] for p in found if p.endswith(suffix) and not _is_temporary(p))

    # --- writing ---------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) ``key``; readers see the old or the new content, never a mix."""
        with self._errors(key):
            if self.local:
                tmp = self._stage(key, data)
                os.replace(tmp, self.path(key))
                _fsync_dir(Path(self.path(key)).parent)
            else:
                self.fs.pipe_file(self.path(key), data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` only if it does not exist: True if this call created it.

        Atomic: of two concurrent writers exactly one gets True, and the object is never visible
        half written. S3: ``PUT`` with ``If-None-Match: *``; locally: a hard link of a complete
        temporary file, which fails if the name exists.
        """
        with self._errors(key):
            if self.local:
                tmp = self._stage(key, data)
                try:
                    os.link(tmp, self.path(key))
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)
                _fsync_dir(Path(self.path(key)).parent)
                return True
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:
                return False
            return True

    def replace_if_match(self, key: str, data: bytes, tag: str) -> bool:
        """Overwrite ``key`` only if its tag (from :meth:`read_tagged`) is still ``tag``: True if written.

        S3: ``PUT`` with ``If-Match: <etag>``; locally: the content hash compared under a lock.
        """
        if len(data) > MAX_CAS_BYTES:
            raise ValueError(f"{key}: {len(data)} bytes is too large for a conditional replace")
        with self._errors(key):
            if self.local:
                with _locked(Path(self.path(key)).parent):
                    try:
                        current = Path(self.path(key)).read_bytes()
                    except FileNotFoundError:
                        return False
                    if _digest(current) != tag:
                        return False
                    self.put(key, data)
                    return True
            try:
                self.fs.pipe_file(self.path(key), data, IfMatch=tag)
            except FileNotFoundError:
                return False
            except OSError as exc:
                if _precondition_failed(exc):
                    return False
                raise
            return True

    def delete(self, key: str) -> None:
        with self._errors(key), suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def upload_dir(self, folder: Path, prefix: str) -> list[str]:
        """Copy every file under ``folder`` to ``prefix/<relative path>``; returns the keys written."""
        keys = []
        for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{file.relative_to(folder).as_posix()}"
            self.put(key, file.read_bytes())
            keys.append(key)
        return keys

    # --- helpers ---------------------------------------------------------------------------
    def _stage(self, key: str, data: bytes) -> str:
        """A complete, fsynced temporary file beside ``key`` (local store only)."""
        final = Path(self.path(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return str(tmp)

    def _cat(self, key: str) -> bytes:
        """One object's content. A GET whose checksum does not match its body raced an overwrite
        (the server swapped the object mid-answer): it is read again, a few times."""
        retries = 0
        while True:
            try:
                return bytes(self.fs.cat_file(self.path(key)))
            except Exception as exc:
                retries += 1
                if retries > TORN_READ_RETRIES or type(exc).__name__ != "FlexibleChecksumError":
                    raise

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Network and server failures become :class:`StoreUnavailable` naming the store and key."""
        try:
            yield
        except (FileNotFoundError, FileExistsError, ValueError, StoreUnavailable):
            raise
        except Exception as exc:
            if self.local and not isinstance(exc, OSError):
                raise
            raise StoreUnavailable(f"store {self.uri} ({key}): {type(exc).__name__}: {exc}") from exc


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_temporary(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def _precondition_failed(exc: BaseException) -> bool:
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    return bool(response.get("Error", {}).get("Code") == "PreconditionFailed")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@cache
def open_store(uri: str, endpoint_url: str | None = None) -> Store:
    """One :class:`Store` per URI and endpoint in this process."""
    return Store(uri, endpoint_url=endpoint_url)
