"""The Lambda processor: Firehose's record contract with a function resource.

The function is called with ``{invocationId, deliveryStreamArn, region,
records: [{recordId, approximateArrivalTimestamp (ms), data (base64)}]}``
(and ``sourceKinesisStreamArn`` for a stream reading a Kinesis stream) and
answers ``{records: [{recordId, result, data, metadata: {partitionKeys}}]}``.
``Ok`` records go on (with their partition keys), ``Dropped`` ones are
gone, and ``ProcessingFailed`` ones, those the answer leaves out or gets
wrong, and all of a batch whose invocation failed ``NumberOfRetries`` + 1
times become error records for the ``processing-failed`` output, in
Firehose's shape (attemptsMade, arrivalTimestamp, errorCode, errorMessage,
attemptEndingTimestamp, rawData, lambdaArn).

AWS documents the contract but not its error codes: ``Lambda.FunctionError``
(the call failed), ``Lambda.ProcessingFailedStatus``, ``Lambda.MissingRecordId``,
``Lambda.InvalidResult`` and ``Lambda.InvalidReturn`` (an answer that is not
the contract's) are this project's names for those cases.
"""

from __future__ import annotations

import binascii
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.clock import Clock
from pipelines.targets import describe_error

if TYPE_CHECKING:
    from plugins.firehose.delivery import Identity
    from plugins.firehose.spec import LambdaProcessor

log = logging.getLogger("plugins.firehose")

#: Call the function with one invocation event; its answer.
Invoke = Callable[[dict[str, Any]], Awaitable[Any]]
RESULTS = ("Ok", "Dropped", "ProcessingFailed")


@dataclass(slots=True)
class Batch:
    """Records for one invocation, as parallel lists: a batch holds thousands,
    and an object per record is work for the allocator and the cyclic
    garbage collector (which scans every container alive)."""

    ids: list[str] = field(default_factory=list)  # recordId
    arrivals: list[float] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Transformed:
    #: The records answered Ok, as parallel lists: their data as the function
    #: made it, their arrival, their partition keys.
    ok_data: list[bytes] = field(default_factory=list)
    ok_arrivals: list[float] = field(default_factory=list)
    ok_keys: list[dict[str, str] | None] = field(default_factory=list)
    dropped: int = 0
    #: Error records (JSON lines) for the processing-failed output.
    failed: list[bytes] = field(default_factory=list)
    invocation_failed: bool = False


class _BadAnswer(ValueError):
    pass


def invocation_event(identity: Identity, records: Batch) -> dict[str, Any]:
    event: dict[str, Any] = {
        "invocationId": str(uuid.uuid4()),
        "deliveryStreamArn": identity.arn,
        "region": identity.region,
        "records": [
            {
                "recordId": rid,
                "approximateArrivalTimestamp": int(arrival * 1000),
                "data": binascii.b2a_base64(data, newline=False).decode(),
            }
            for rid, arrival, data in zip(records.ids, records.arrivals, records.data, strict=True)
        ],
    }
    if identity.source_arn is not None:
        event["sourceKinesisStreamArn"] = identity.source_arn
    return event


def _answers(answer: Any) -> dict[str, Mapping[str, Any]]:
    if isinstance(answer, str | bytes):
        import orjson

        try:
            answer = orjson.loads(answer)
        except orjson.JSONDecodeError:
            raise _BadAnswer("the function's answer is not JSON") from None
    if not isinstance(answer, Mapping) or not isinstance(answer.get("records"), list):
        raise _BadAnswer("the function's answer has no records list")
    found: dict[str, Mapping[str, Any]] = {}
    for item in answer["records"]:
        # type() first: isinstance against an ABC is slow, and most answers are dicts.
        if (type(item) is dict or isinstance(item, Mapping)) and isinstance(
            item.get("recordId"), str
        ):
            found[item["recordId"]] = item
    return found


async def transform(
    invoke: Invoke,
    identity: Identity,
    processor: LambdaProcessor,
    records: Batch,
    *,
    clock: Clock,
) -> Transformed:
    """Call the function over ``records``, with retries."""
    attempts = 0
    error = ("", "")
    answers: dict[str, Mapping[str, Any]] | None = None
    while attempts <= processor.retries:
        attempts += 1
        try:
            answers = _answers(await invoke(invocation_event(identity, records)))
            break
        except _BadAnswer as exc:
            error = ("Lambda.InvalidReturn", str(exc))
        except Exception as exc:
            error = ("Lambda.FunctionError", describe_error(exc))
        log.warning(
            "firehose %s: transformation attempt %d failed: %s",
            identity.name,
            attempts,
            error[1],
        )
    ended = clock.time()
    out = Transformed()

    def fail(data: bytes, arrival: float, code: str, message: str) -> None:
        from plugins.firehose.delivery import error_record

        out.failed.append(
            error_record(
                data,
                arrival,
                code,
                message,
                attempts=attempts,
                ended=ended,
                lambda_arn=processor.arn,
            )
        )

    if answers is None:
        out.invocation_failed = True
        for arrival, data in zip(records.arrivals, records.data, strict=True):
            fail(data, arrival, *error)
        return out
    ok_data, ok_arrivals, ok_keys = out.ok_data, out.ok_arrivals, out.ok_keys
    for rid, arrival, data in zip(records.ids, records.arrivals, records.data, strict=True):
        item = answers.get(rid)
        if item is None:
            fail(
                data, arrival, "Lambda.MissingRecordId", f"record {rid} is missing from the answer"
            )
            continue
        result = item.get("result")
        if result not in RESULTS:
            fail(
                data,
                arrival,
                "Lambda.InvalidResult",
                f"result {result!r} is not {', '.join(RESULTS)}",
            )
        elif result == "Dropped":
            out.dropped += 1
        elif result == "ProcessingFailed":
            fail(
                data,
                arrival,
                "Lambda.ProcessingFailedStatus",
                "the function returned ProcessingFailed",
            )
        else:
            try:
                # base64.b64decode(..., validate=True) without its Python wrapper.
                made = binascii.a2b_base64(item.get("data") or "", strict_mode=True)
                keys = _keys(item.get("metadata"))
            except (binascii.Error, ValueError, TypeError) as exc:
                fail(data, arrival, "Lambda.InvalidResult", str(exc) or "data is not base64")
                continue
            ok_data.append(made)
            ok_arrivals.append(arrival)
            ok_keys.append(keys)
    return out


def _keys(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        raise ValueError("metadata must be an object")
    keys = metadata.get("partitionKeys")
    if keys is None:
        return None
    if type(keys) is not dict and not isinstance(keys, Mapping):
        raise ValueError("metadata.partitionKeys must map names to strings")
    for name, value in keys.items():
        if not (type(name) is str or isinstance(name, str)) or not (
            type(value) is str or isinstance(value, str)
        ):
            raise ValueError("metadata.partitionKeys must map names to strings")
    # Read only and never kept: a dict (most answers) is not copied.
    return keys if type(keys) is dict else dict(keys)
