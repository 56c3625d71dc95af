"""Which directory is a bucket: the one public lookup every plugin uses.

A bucket a ``bucket`` resource declares is that resource's directory (its
``bucket`` setting names it, else the resource's name). A bucket no resource
declares is ``<state dir>/buckets/<name>``: beside a SQLite state file, or
``./buckets/<name>`` (the runner's working directory) with a PostgreSQL
state or none. So a definition or a delivery stream written for AWS runs
unchanged: a bucket needs declaring only to put it elsewhere.

A declared bucket may instead be in an S3-compatible object store (its
resource's ``s3:`` settings: ``plugins.bucket.remote.RemoteBucket``);
``Buckets.place`` is a bucket's directory or that store, and
``open_object`` writes an object in either, whole or not at all.

``Buckets`` holds such a mapping and reads, writes and lists objects (on a
worker thread, never in the event loop); ``buckets_of`` makes one of a
running runtime's resources, as they are at the moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.store import Location
from pipelines.targets import underlying
from plugins.bucket.objects import (
    AtomicFile,
    BucketError,
    ObjectInfo,
    list_objects,
    object_path,
    read_object,
    write_object,
)
from plugins.bucket.remote import RemoteBucket, RemoteUpload

#: Where a bucket's objects are: a directory, or a bucket of an object store.
Place = Path | RemoteBucket

#: S3's bucket name rule: 3 to 63 lowercase letters, digits, dots and hyphens
#: (underscores too: older buckets have them, and AWS's recordings use one).
NAME = r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]"
_NAME = re.compile(f"^{NAME}$")
_ARN = re.compile(rf"^arn:[^:]*:s3:::(?P<bucket>{NAME})$")
#: The directory (beside the state) holding the buckets no resource declares.
DEFAULT_DIRECTORY = "buckets"


def is_bucket_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.match(name) is not None


def bucket_name(name_or_arn: str) -> str:
    """The bucket a name or an S3 ARN (``arn:aws:s3:::NAME``) names."""
    found = _ARN.match(name_or_arn)
    if found is not None:
        return found.group("bucket")
    if is_bucket_name(name_or_arn):
        return name_or_arn
    raise BucketError(f"'{name_or_arn}' is not an S3 bucket's name or ARN")


def default_root(state: Location | None) -> Path:
    """Where the buckets no resource declares are: ``buckets`` beside a
    state file, else in the working directory."""
    if isinstance(state, Path):
        return state.parent / DEFAULT_DIRECTORY
    return Path(DEFAULT_DIRECTORY)


class Buckets:
    """Buckets by name: ``declared`` ones' directories, the others under
    ``root`` (None: an undeclared bucket is unknown)."""

    def __init__(
        self, declared: Mapping[str, str | Path | RemoteBucket], root: Path | None = None
    ) -> None:
        self.declared: dict[str, Place] = {
            name: place if isinstance(place, RemoteBucket) else Path(place)
            for name, place in declared.items()
        }
        self.root = root

    def place(self, bucket: str) -> Place:
        """Where ``bucket`` (a name or an S3 ARN) is: its directory, or its object store."""
        name = bucket_name(bucket) if bucket.startswith("arn:") else bucket
        found = self.declared.get(name)
        if found is not None:
            return found
        if self.root is None or not is_bucket_name(name):
            raise BucketError(f"no bucket named '{name}' in this runtime")
        return self.root / name

    def directory(self, bucket: str) -> Path:
        """The directory of ``bucket`` (a name or an S3 ARN); a bucket in an
        object store has none."""
        found = self.place(bucket)
        if isinstance(found, RemoteBucket):
            raise BucketError(f"bucket '{found.bucket}' is in an object store, not a directory")
        return found

    async def get_object(self, bucket: str, key: str) -> bytes:
        found = self.place(bucket)
        if isinstance(found, RemoteBucket):
            return await asyncio.to_thread(found.read, key)
        return await asyncio.to_thread(read_object, found, key, bucket)

    async def list_objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """ListObjectsV2's objects, each with its ETag."""
        found = self.place(bucket)
        if isinstance(found, RemoteBucket):
            return await asyncio.to_thread(found.list, prefix)
        return await asyncio.to_thread(list_objects, found, prefix, etags=True, bucket=bucket)

    async def put_object(self, bucket: str, key: str, body: bytes) -> None:
        found = self.place(bucket)
        if isinstance(found, RemoteBucket):
            await asyncio.to_thread(found.write, key, body)
        else:
            await asyncio.to_thread(write_object, found, key, body)


def open_object(place: Place, key: str) -> AtomicFile | RemoteUpload:
    """An object being written (blocking: on a worker thread): write to its
    ``file``, then ``commit`` (it appears whole) or ``discard``."""
    if isinstance(place, RemoteBucket):
        return place.open(key)
    return AtomicFile(object_path(place, key))


def declared_buckets(resources: Mapping[str, Any]) -> dict[str, Place]:
    """The buckets among ``resources`` (name -> target): bucket name -> place."""
    from plugins.bucket.target import BucketTarget

    found: dict[str, Place] = {}
    for target in resources.values():
        target = underlying(target)  # a config test's stand-in wraps it
        if isinstance(target, BucketTarget):
            found[target.bucket] = target.place
    return found


def buckets_of(services: Any) -> Buckets:
    """A running runtime's buckets (``services``: the ``Runtime``, as its
    targets see it): its ``bucket`` resources now, the rest by default."""
    names = getattr(services, "resource_names", None)
    resources = {name: services.resource(name) for name in (names() if names else ())}
    return Buckets(declared_buckets(resources), default_root(services.state_path))


def buckets_of_config(config: Any, state: Location | None) -> Buckets:
    """The buckets a loaded config (``pipelines.config.PipelineConfig``)
    declares, for commands that run beside a pipeline rather than in it."""
    from plugins.bucket.remote import parse_s3

    declared: dict[str, str | Path | RemoteBucket] = {}
    for name, settings in config.resources.items():
        if settings.get("type") != "bucket":
            continue
        bucket = str(settings.get("bucket", name))
        if isinstance(settings.get("s3"), Mapping):
            with contextlib.suppress(ValueError):  # a bad one is the runner's to report
                declared[bucket] = RemoteBucket(bucket, parse_s3(settings["s3"]))
        elif isinstance(settings.get("directory"), str):
            declared[bucket] = config.directory / settings["directory"]
    return Buckets(declared, default_root(state))
