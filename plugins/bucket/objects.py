"""Objects as files: an S3 key is a path under its bucket's directory.

Written once for every plugin that reads or writes a bucket (a Distributed
Map's ItemReader and ResultWriter, a delivery stream's objects):

- ``object_path``: the file of a key; a key that would leave the directory
  (a ``..`` or ``.`` segment, an absolute key, an empty one, one ending in
  ``/``) is refused with ``BucketError``: S3 takes such keys, a directory
  cannot hold them without escaping it or colliding with a folder;
- ``AtomicFile`` and ``write_object``: an object is whole or absent, never
  half written: a temporary file beside it, synced, renamed into place, and
  the directory synced so the rename outlives a crash;
- ``read_object`` and ``list_objects`` (every object under a prefix in S3's
  order: keys by their UTF-8 bytes; our temporary files are not objects).

These are blocking file operations: callers in the event loop run them in a
thread (``Buckets`` in ``plugins.bucket.lookup`` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

#: How a temporary file is named: hidden, and ending so no key's file is taken for one.
TEMPORARY_SUFFIX = ".tmp~"


class BucketError(Exception):
    """A bucket or object that cannot be read or written (the cause AWS would give)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as ListObjectsV2 lists it, and its file."""

    key: str
    size: int
    last_modified: float
    #: Its file, or its ``s3://`` URL in a remote bucket.
    path: Path | str
    #: The MD5 of its bytes in quotes (a single-part object's ETag), when asked for.
    etag: str | None = None

    def item(self) -> dict[str, Any]:
        """ListObjectsV2's ``Contents`` entry (the keys in the order AWS's Map items have)."""
        return {
            "Etag": self.etag,
            "Key": self.key,
            "LastModified": iso_millis(self.last_modified),
            "Size": self.size,
            "StorageClass": "STANDARD",
        }


def iso_millis(seconds: float) -> str:
    """A time as S3 and Step Functions write it: UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def check_key(key: str) -> PurePosixPath:
    """``key`` as a relative path, or ``BucketError`` when it would not name
    a file inside its bucket's directory."""
    path = PurePosixPath(key)
    if (
        not key
        or key.startswith("/")
        or key.endswith("/")
        or "\0" in key
        or any(part in ("..", ".") for part in key.split("/"))
    ):
        raise BucketError(f"the key '{key}' does not name a file inside its bucket")
    return path


def object_path(directory: Path, key: str) -> Path:
    """The file of ``key`` under ``directory`` (see ``check_key``)."""
    return directory.joinpath(*check_key(key).parts)


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


class AtomicFile:
    """A file written whole or not at all: write to ``file``, then ``commit``
    (synced, renamed over ``path``, the directory synced) or ``discard``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
        self.file: BinaryIO = open(self.temporary, "xb")  # noqa: SIM115 - closed by commit/discard

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            self.temporary.unlink()


def write_object(directory: Path, key: str, body: bytes) -> None:
    """Write ``body`` as ``key`` (see ``AtomicFile``)."""
    path = object_path(directory, key)
    try:
        out = AtomicFile(path)
        try:
            out.file.write(body)
            out.commit()
        except BaseException:
            out.discard()
            raise
    except OSError as error:
        raise BucketError(f"cannot write {path}: {error.strerror or error}") from None


def read_object(directory: Path, key: str, bucket: str = "") -> bytes:
    path = object_path(directory, key)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BucketError(
            f"The specified key does not exist. (Bucket: {bucket}, Key: {key}; file {path})"
        ) from None
    except OSError as error:
        raise BucketError(f"cannot read {path}: {error.strerror or error}") from None


def list_objects(
    directory: Path, prefix: str = "", *, etags: bool = False, bucket: str = ""
) -> list[ObjectInfo]:
    """Every object under ``directory`` whose key starts with ``prefix``, in
    S3's order (keys by their UTF-8 bytes); ``etags`` reads each file for its MD5."""
    if not directory.is_dir():
        raise BucketError(
            f"The specified bucket does not exist. (Bucket: {bucket}; directory {directory})"
        )
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if is_temporary(name):
                continue
            path = Path(root, name)
            key = path.relative_to(directory).as_posix()
            if not key.startswith(prefix):
                continue
            try:
                stat = path.stat()
                etag = None
                if etags:
                    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
                    etag = f'"{digest}"'
            except FileNotFoundError:  # deleted while listed: S3 would not list it either
                continue
            found.append(ObjectInfo(key, stat.st_size, stat.st_mtime, path, etag))
    return sorted(found, key=lambda info: info.key.encode())
