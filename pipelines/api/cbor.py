"""Smithy RPC v2 CBOR: AWS's binary protocol, read and written by the service model.

A request is ``POST /service/<targetPrefix>/operation/<Operation>`` with the
header ``Smithy-Protocol: rpc-v2-cbor`` and a CBOR map as its body (none for
an operation without input). CBOR has types JSON lacks: timestamps arrive as
tag 1 (epoch seconds) and blobs as byte strings. ``read_cbor`` decodes the
body into Python values and checks them with the same walker as the JSON
protocols (``wire.check_input``); ``write_cbor`` writes an answer with the
same walker as JSON's (``wire.write_output``), timestamps as tag 1 and blobs
as byte strings; ``error_cbor`` is the error map (``__type``, ``message``).
Any served service whose model lists ``smithy-rpc-v2-cbor`` gets it
(CloudWatch's SDKs pick it where JSON is not known to them).
"""

from __future__ import annotations

import re
from typing import Any

import cbor2
from botocore.model import OperationModel

from pipelines.api.errors import ApiError
from pipelines.api.wire import check_input, epoch_seconds, write_output

PROTOCOL = "rpc-v2-cbor"
#: The protocol's name in botocore's models (``metadata.protocols``).
MODEL_PROTOCOL = "smithy-rpc-v2-cbor"
CONTENT_TYPE = "application/cbor"
#: ``/service/GraniteServiceVersion20100801/operation/PutMetricData``
PATH = re.compile(r"/service/([^/]+)/operation/([^/]+)")


def read_cbor(
    operation: OperationModel,
    body: bytes,
    *,
    validation_code: str = "ValidationException",
    enums: bool = True,
) -> dict[str, Any]:
    """The parameters of an RPC v2 CBOR request, checked against the input shape."""
    shape = operation.input_shape
    if not body:
        raw: Any = {}
    else:
        try:
            raw = cbor2.loads(body)
        except (cbor2.CBORError, ValueError) as error:
            raise ApiError("SerializationException", f"the body is not CBOR: {error}") from None
    if shape is None:
        return {}
    return check_input(shape, raw, validation_code=validation_code, enums=enums)


def _timestamp(value: Any) -> cbor2.CBORTag:
    seconds = epoch_seconds(value)
    whole = int(seconds)
    return cbor2.CBORTag(1, whole if whole == seconds else seconds)


def write_cbor(operation: OperationModel, value: Any) -> bytes:
    """The body of an operation's answer: empty when it has no output shape,
    as the protocol requires."""
    shape = operation.output_shape
    if shape is None:
        return b""
    return cbor2.dumps(write_output(shape, value, timestamp=_timestamp, blob=bytes))


def error_cbor(shape_name: str, message: str) -> bytes:
    return cbor2.dumps({"__type": shape_name, "message": message})
