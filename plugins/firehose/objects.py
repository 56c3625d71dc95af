"""The objects a delivery stream has written (the CLI's ``objects``).

Its bucket's directory comes from the bucket plugin's lookup
(``plugins.bucket.lookup``: a ``bucket`` resource's, else
``<state dir>/buckets/<name>``), or it is in an object store (listed
through its S3 API); its objects are those whose file name
begins with the stream's name (AWS's default object name), listed by the
bucket plugin (temporary files are not objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from plugins.bucket.lookup import Buckets
from plugins.bucket.objects import iso_millis, list_objects
from plugins.bucket.remote import RemoteBucket
from plugins.firehose.spec import destination_of


def delivered(name: str, config: Mapping[str, Any], buckets: Buckets) -> list[dict[str, Any]]:
    """The stream's objects now, oldest first: Bucket, Key, Size, LastModified, Path."""
    bucket = destination_of(config).bucket
    place = buckets.place(bucket)
    if isinstance(place, RemoteBucket):
        listed = place.list()
    elif place.is_dir():
        listed = list_objects(place, bucket=bucket)
    else:
        return []
    found = [info for info in listed if PurePosixPath(info.key).name.startswith(f"{name}-")]
    found.sort(key=lambda info: (info.last_modified, info.key))
    return [
        {
            "Bucket": bucket,
            "Key": info.key,
            "Size": info.size,
            "LastModified": iso_millis(info.last_modified),
            "Path": str(info.path),
        }
        for info in found
    ]
