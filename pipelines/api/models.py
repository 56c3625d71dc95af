"""AWS's service models, as botocore ships them: what every request and answer looks like.

The endpoint never spells an operation's shape by hand: it reads a request
and writes an answer by walking the operation's input and output shapes in
the model botocore carries for its own clients (the same files every AWS SDK
is generated from).
"""

from __future__ import annotations

import functools

import botocore.loaders
import botocore.model
from botocore.model import ServiceModel


@functools.cache
def _loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


@functools.cache
def service_model(name: str) -> ServiceModel:
    """The model of the service botocore names ``name`` (``events``, ``sqs``...)."""
    raw = _loader().load_service_model(name, "service-2")
    return botocore.model.ServiceModel(raw, service_name=name)
