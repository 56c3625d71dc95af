"""Where a delivery stream's objects are, and which are there.

A bucket is a directory: the stream's ``buckets`` setting maps a bucket to
one, else it is ``<directory>/<bucket>``, ``directory`` defaulting to
``buckets`` beside the state database (``./buckets`` with a PostgreSQL
state). ``delivered`` lists a stream's objects there (its key names begin
with the stream's name; temporary files, hidden, are not listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.store import Location
from plugins.firehose.spec import destination_of


def bucket_directory(settings: Mapping[str, Any], bucket: str, state: Location | None) -> Path:
    buckets = settings.get("buckets") or {}
    if bucket in buckets:
        return Path(buckets[bucket])
    base = settings.get("directory")
    if base is None:
        base = Path(state).parent / "buckets" if isinstance(state, Path) else Path("buckets")
    return Path(base) / bucket


def delivered(
    name: str, config: Mapping[str, Any], settings: Mapping[str, Any], state: Location | None
) -> list[dict[str, Any]]:
    """The stream's objects now, oldest first: Key, Size, LastModified, Path."""
    bucket = destination_of(config).bucket
    root = bucket_directory(settings, bucket, state)
    found = []
    if root.is_dir():
        for path in root.rglob(f"{name}-*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            stat = path.stat()
            found.append(
                {
                    "Bucket": bucket,
                    "Key": path.relative_to(root).as_posix(),
                    "Size": stat.st_size,
                    "LastModified": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
                    "Path": str(path),
                    "_mtime": stat.st_mtime_ns,
                }
            )
    found.sort(key=lambda item: (item["_mtime"], item["Key"]))
    for item in found:
        del item["_mtime"]
    return found
