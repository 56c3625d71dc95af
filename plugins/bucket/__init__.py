"""The built-in ``bucket`` plugin: local directories standing for S3 buckets.

One concept for every plugin that reads or writes S3 objects (Step
Functions' Distributed Map, Firehose's delivery streams):

- ``target``: the ``bucket`` resource type (a directory, the S3 name it
  answers to);
- ``lookup``: a bucket's name or ARN to its directory (a declared bucket's,
  else ``<state dir>/buckets/<name>``), and ``Buckets``, which reads, writes
  and lists objects off the event loop;
- ``objects``: objects as files: key checks, atomic writes, S3's listing order.

See docs/plugins.md and docs/buckets.md.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.hookspecs import hookimpl
from pipelines.targets import LazyTargetType


@hookimpl
def register_targets(register: Callable[[LazyTargetType], None]) -> None:
    # By name: the implementation is imported when a config uses the type.
    register(LazyTargetType("bucket", "plugins.bucket.target:BucketType"))
