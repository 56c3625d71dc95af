"""The ``bucket`` resource: a local directory standing for an S3 bucket.

    resources:
      ratings:
        type: bucket
        directory: data/ratings        # relative to the config's directory
        bucket: amzn-s3-demo-bucket    # optional: the S3 name definitions use

A Distributed Map's ItemReader (``s3:getObject``, ``s3:listObjectsV2``)
and ResultWriter (``s3:putObject``) name a bucket; the runtime's
``RuntimeItems`` finds the ``bucket`` resource answering to that name (its
``bucket`` setting, else its resource name) and an object's key is a path
under its directory (``plugins.states.itemio``). So a definition written
for AWS runs unchanged: only the config says where its bucket's files are.

A bucket is not a target (a rule delivering to it is refused, as to a
connection); it holds no state besides its files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, PipelinesError, Problems, Where
from pipelines.settings import Flag, Settings, Shape
from pipelines.targets import DeliveryContext, Target, TargetServices, TargetType
from plugins.states import itemio

#: S3's bucket name rule: 3 to 63 lowercase letters, digits, dots and hyphens
#: (underscores too: older buckets have them, and AWS's recordings use one).
_NAME = r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"
SETTINGS_TABLE = Settings(
    {
        "directory": Shape(
            {"type": "string", "minLength": 1},
            "the directory holding the bucket's objects (a key is a path under it),"
            " relative to the config's directory",
        ),
        "bucket": Shape(
            {"type": "string", "pattern": _NAME},
            "the S3 bucket name definitions use (default: the resource's name)",
        ),
        "create": Flag(True, "make the directory when it does not exist"),
    },
    required=("directory",),
)


class BucketTarget(Target):
    """A bucket: where a Distributed Map reads items and writes results."""

    def __init__(self, name: str, bucket: str, directory: Path, create: bool) -> None:
        self.name = name
        self.bucket = bucket
        self.directory = directory
        self.create = create

    async def start(self, services: TargetServices) -> None:
        if self.create:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise PipelinesError(
                    f"bucket {self.name}: cannot make {self.directory}: {error.strerror}"
                ) from None
        elif not self.directory.is_dir():
            raise PipelinesError(f"bucket {self.name}: {self.directory} is not a directory")

    def accept(self, where: Where, parameters: Mapping[str, Any]) -> None:
        raise ConfigError(
            where / "resource",
            f"{self.name!r} is a bucket: a state machine's Distributed Map reads and writes it",
        )

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        raise DeliveryError("NotATarget", f"bucket {self.name} is not a target", retryable=False)


class BucketType(TargetType):
    name = "bucket"
    description = (
        "A local directory standing for an S3 bucket (a Distributed Map's items and results)"
    )
    arn_template = "arn:aws:s3:::{name}"
    settings = SETTINGS_TABLE
    file_settings = ("directory",)

    def create(self, name: str, config: Mapping[str, Any]) -> BucketTarget:
        import re

        where = Where(f"target {name}")
        problems = Problems()
        with problems:
            SETTINGS_TABLE.check_keys(where, config)
        directory = config.get("directory")
        with problems:
            if not isinstance(directory, str) or not directory:
                raise ConfigError(where / "directory", "must be a directory's path")
        bucket = config.get("bucket", name)
        with problems:
            if not isinstance(bucket, str) or not re.match(_NAME, bucket):
                raise ConfigError(
                    where / "bucket",
                    f"{bucket!r} is not an S3 bucket name (3 to 63 lowercase letters,"
                    " digits, dots, hyphens)",
                )
        create = True
        with problems:
            create = bool(SETTINGS_TABLE.flag(where, config, "create"))
        problems.raise_any()
        assert isinstance(directory, str) and isinstance(bucket, str)
        return BucketTarget(name, bucket, Path(directory), create)


class RuntimeItems:
    """The ``ItemSource`` of a runtime's executions: its ``bucket`` resources,
    and its ``queue`` resources for the queue reader."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def directory(self, bucket: str) -> Path:
        services = self.services
        names = getattr(services, "resource_names", None)
        for other in names() if names is not None else ():
            found = services.resource(other)
            target = getattr(found, "inner", None) or found  # a config test's recorder
            if isinstance(target, BucketTarget) and target.bucket == bucket:
                return target.directory
        raise itemio.BucketError(
            f"no bucket named '{bucket}' in this runtime (declare a resource of type bucket)"
        )

    async def get_object(self, bucket: str, key: str) -> bytes:
        return await itemio.LocalBuckets({bucket: self.directory(bucket)}).get_object(bucket, key)

    async def list_objects(self, bucket: str, prefix: str) -> list[itemio.ObjectInfo]:
        return await itemio.LocalBuckets({bucket: self.directory(bucket)}).list_objects(
            bucket, prefix
        )

    async def put_object(self, bucket: str, key: str, body: bytes) -> None:
        await itemio.LocalBuckets({bucket: self.directory(bucket)}).put_object(bucket, key, body)

    def _queue(self, name: str) -> Any:
        """The queue resource named ``name`` (or whose queue is so named), started."""
        from plugins.queue.target import QueueTarget

        services = self.services
        names = getattr(services, "resource_names", None)
        for other in names() if names is not None else ():
            found = services.resource(other)
            target = getattr(found, "inner", None) or found  # a config test's stand-in
            if isinstance(target, QueueTarget) and name in (target.name, target.queue):
                if target.store is None:
                    raise itemio.BucketError(f"queue {target.queue} is stopped")
                return target
        raise itemio.BucketError(f"no queue named '{name}' in this runtime")

    async def receive_messages(
        self, queue: str, most: int, visibility_timeout: int | None
    ) -> list[Any]:
        from pipelines.errors import QueueError

        target = self._queue(queue)
        items: list[Any] = []
        try:
            while len(items) < most:
                received = await target.store.receive(
                    target.queue,
                    min(10, most - len(items)),
                    wait_time=0,
                    visibility_timeout=visibility_timeout,
                )
                if not received:
                    break
                items += [message.to_json() for message in received]
        except QueueError as error:
            raise itemio.BucketError(f"{error.code}: {error.message}") from None
        return items

    async def delete_messages(self, queue: str, receipt_handles: Sequence[str]) -> None:
        from pipelines.errors import QueueError

        target = self._queue(queue)
        try:
            for start in range(0, len(receipt_handles), 10):
                chunk = receipt_handles[start : start + 10]
                await target.store.delete_batch(
                    target.queue, [(str(i), handle) for i, handle in enumerate(chunk)]
                )
        except QueueError as error:
            raise itemio.BucketError(f"{error.code}: {error.message}") from None
