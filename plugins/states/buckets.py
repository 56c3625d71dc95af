"""``RuntimeItems``: a runtime's buckets and queues as a Distributed Map's ``ItemSource``.

A Distributed Map's ItemReader (``s3:getObject``, ``s3:listObjectsV2``)
and ResultWriter (``s3:putObject``) name a bucket: it is found through the
``bucket`` plugin's lookup (``plugins.bucket.lookup.buckets_of``: a
``bucket`` resource answering to that name, else the default directory
``<state dir>/buckets/<name>``), so a definition written for AWS runs
unchanged. The queue reader (``sqs:receiveMessage``, ours) reads the
runtime's ``queue`` resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.targets import underlying
from plugins.bucket.lookup import buckets_of
from plugins.bucket.objects import BucketError, ObjectInfo


class RuntimeItems:
    """The ``ItemSource`` of a runtime's executions: its buckets, and its
    ``queue`` resources for the queue reader."""

    def __init__(self, services: Any) -> None:
        self.services = services

    async def get_object(self, bucket: str, key: str) -> bytes:
        return await buckets_of(self.services).get_object(bucket, key)

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        return await buckets_of(self.services).list_objects(bucket, prefix)

    async def put_object(self, bucket: str, key: str, body: bytes) -> None:
        await buckets_of(self.services).put_object(bucket, key, body)

    def _queue(self, name: str) -> Any:
        """The queue resource named ``name`` (or whose queue is so named), started."""
        from plugins.queue.target import QueueTarget

        services = self.services
        names = getattr(services, "resource_names", None)
        for other in names() if names is not None else ():
            found = services.resource(other)
            target = underlying(found)  # a config test's stand-in wraps it
            if isinstance(target, QueueTarget) and name in (target.name, target.queue):
                if target.store is None:
                    raise BucketError(f"queue {target.queue} is stopped")
                return target
        raise BucketError(f"no queue named '{name}' in this runtime")

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
            raise BucketError(f"{error.code}: {error.message}") from None
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
            raise BucketError(f"{error.code}: {error.message}") from None
