"""Which directory is a bucket: the one public lookup every plugin uses.

A bucket a ``bucket`` resource declares is that resource's directory (its
``bucket`` setting names it, else the resource's name). A bucket no resource
declares is ``<state dir>/buckets/<name>``: beside a SQLite state file, or
``./buckets/<name>`` (the runner's working directory) with a PostgreSQL
state or none. So a definition or a delivery stream written for AWS runs
unchanged: a bucket needs declaring only to put it elsewhere.

``Buckets`` holds such a mapping and reads, writes and lists objects (on a
worker thread, never in the event loop); ``buckets_of`` makes one of a
running runtime's resources, as they are at the moment.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.store import Location
from plugins.bucket.objects import BucketError, ObjectInfo, list_objects, read_object, write_object

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

    def __init__(self, declared: Mapping[str, str | Path], root: Path | None = None) -> None:
        self.declared = {name: Path(path) for name, path in declared.items()}
        self.root = root

    def directory(self, bucket: str) -> Path:
        """The directory of ``bucket`` (a name or an S3 ARN)."""
        name = bucket_name(bucket) if bucket.startswith("arn:") else bucket
        found = self.declared.get(name)
        if found is not None:
            return found
        if self.root is None or not is_bucket_name(name):
            raise BucketError(f"no bucket named '{name}' in this runtime")
        return self.root / name

    async def get_object(self, bucket: str, key: str) -> bytes:
        return await asyncio.to_thread(read_object, self.directory(bucket), key, bucket)

    async def list_objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """ListObjectsV2's objects, each with its ETag."""
        directory = self.directory(bucket)
        return await asyncio.to_thread(list_objects, directory, prefix, etags=True, bucket=bucket)

    async def put_object(self, bucket: str, key: str, body: bytes) -> None:
        await asyncio.to_thread(write_object, self.directory(bucket), key, body)


def declared_buckets(resources: Mapping[str, Any]) -> dict[str, Path]:
    """The buckets among ``resources`` (name -> target): bucket name -> directory."""
    from plugins.bucket.target import BucketTarget

    found: dict[str, Path] = {}
    for target in resources.values():
        target = getattr(target, "inner", None) or target  # a config test's stand-in
        if isinstance(target, BucketTarget):
            found[target.bucket] = target.directory
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
    declared: dict[str, Path] = {}
    for name, settings in config.resources.items():
        if settings.get("type") != "bucket" or not isinstance(settings.get("directory"), str):
            continue
        declared[str(settings.get("bucket", name))] = config.directory / settings["directory"]
    return Buckets(declared, default_root(state))
