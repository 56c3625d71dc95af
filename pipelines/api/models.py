"""AWS's service models, as botocore ships them: what every request and answer looks like.

The endpoint never spells an operation's shape by hand: it reads a request
and writes an answer by walking the operation's input and output shapes in
the model botocore carries for its own clients (the same files every AWS SDK
is generated from).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping

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


def with_xml_names(
    model: ServiceModel, names: Mapping[str, Mapping[str, str]], namespace: str
) -> ServiceModel:
    """``model`` with the query protocol's XML names added, for a service that
    moved from the query protocol to JSON and whose botocore model dropped them.

    ``names`` maps a shape to its parts' XML names (its members' for a
    structure, ``member`` for a list, ``key``/``value`` for a map), as the
    service's last query model spelt them (``locationName``). A name for a
    part the model lacks is an error: the table has gone stale.
    """
    raw = copy.deepcopy(_loader().load_service_model(model.service_name, "service-2"))
    shapes = raw["shapes"]
    for shape_name, parts in names.items():
        shape = shapes.get(shape_name)
        if shape is None:
            raise ValueError(f"{model.service_name}'s model has no shape {shape_name!r}")
        for part, xml_name in parts.items():
            reference = shape["members"].get(part) if "members" in shape else shape.get(part)
            if not isinstance(reference, dict):
                raise ValueError(f"{model.service_name}'s {shape_name} has no {part!r}")
            reference["locationName"] = xml_name
    raw["metadata"]["xmlNamespace"] = namespace
    return botocore.model.ServiceModel(raw, service_name=model.service_name)
