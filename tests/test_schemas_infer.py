"""Schemas inferred from events (``plugins.schemas.infer``): AWS's layout of
discovered schemas, its names, versions by structure and not by value, the
fingerprint, and ExportSchema's conversion; and schema content checked as
CreateSchema checks it, and events validated against it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.schemas.content import SchemaError, check_content, compile_validator, msgspec_type
from plugins.schemas.discovery import shape_from
from plugins.schemas.infer import (
    DRAFT4,
    OPENAPI,
    discovered,
    export_draft4,
    fingerprint,
    merge,
    pascal,
    render,
    schema_name,
    shape_of,
)

ORDER = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "Order Placed",
    "source": "shop.orders",
    "account": "123456789012",
    "time": "2026-12-04T10:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:shop:us-east-1:123456789012:order/1"],
    "detail": {
        "orderId": "o-1",
        "total": 12.5,
        "paid": True,
        "customer": {"name": "Ada", "tier": "gold"},
        "lines": [{"sku": "a", "count": 1}, {"sku": "b", "count": 2}],
    },
}


def test_a_discovered_schema_has_aws_layout() -> None:
    schema = discovered([ORDER], OPENAPI)
    assert schema["openapi"] == "3.0.0"
    assert schema["info"] == {"version": "1.0.0", "title": "OrderPlaced"}
    assert schema["paths"] == {}
    components = schema["components"]["schemas"]
    event = components["AWSEvent"]
    assert event["x-amazon-events-source"] == "shop.orders"
    assert event["x-amazon-events-detail-type"] == "Order Placed"
    # The envelope's fields as AWS's discovered schemas show them.
    assert set(event["required"]) == {
        "detail-type",
        "resources",
        "id",
        "source",
        "time",
        "detail",
        "region",
        "version",
        "account",
    }
    assert event["properties"]["detail"] == {"$ref": "#/components/schemas/OrderPlaced"}
    assert event["properties"]["time"] == {"type": "string", "format": "date-time"}
    assert event["properties"]["resources"] == {"type": "array", "items": {"type": "string"}}
    detail = components["OrderPlaced"]
    assert detail["properties"]["customer"] == {"$ref": "#/components/schemas/Customer"}
    assert detail["properties"]["lines"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Lines"},
    }
    assert detail["properties"]["total"] == {"type": "number"}
    assert detail["properties"]["paid"] == {"type": "boolean"}
    assert components["Lines"]["required"] == ["count", "sku"]


def test_json_that_is_no_event_is_rendered_as_aws_renders_it() -> None:
    # aws-cli's example of GetDiscoveredSchema (a PutEvents entry given as the event).
    entry = {
        "Source": "com.mycompany.myapp",
        "Detail": '{ "key1": "value1", "key2": "value2" }',
        "EventBusName": "default",
        "Resources": ["resource1", "resource2"],
        "DetailType": "myDetailType",
    }
    recorded = json.loads(
        '{"openapi":"3.0.0","info":{"version":"1.0.0","title":"Event"},"paths":{},'
        '"components":{"schemas":{"Event":{"type":"object","required":["EventBusName",'
        '"DetailType","Resources","Detail","Source"],"properties":{"Detail":{"type":"string"},'
        '"DetailType":{"type":"string"},"EventBusName":{"type":"string"},"Resources":'
        '{"type":"array","items":{"type":"string"}},"Source":{"type":"string"}}}}}}'
    )
    made = discovered([entry], OPENAPI)
    # AWS's order of ``required`` is its own; the set is what it says.
    made_event = made["components"]["schemas"]["Event"]
    recorded_event = recorded["components"]["schemas"]["Event"]
    assert set(made_event.pop("required")) == set(recorded_event.pop("required"))
    assert made == recorded


def test_an_empty_array_has_object_items_as_aws_writes_them() -> None:
    schema = discovered([{**ORDER, "resources": []}], OPENAPI)
    event = schema["components"]["schemas"]["AWSEvent"]
    assert event["properties"]["resources"] == {"type": "array", "items": {"type": "object"}}


def test_an_empty_array_adds_nothing_to_what_is_known_no_new_version() -> None:
    # Two events of one structure, both with `resources: []`, and one whose
    # `lines` is empty: an empty array says nothing of its items, so the
    # schema stays the first event's (no version for an unchanged structure,
    # `sku` and `count` still required of every line).
    first = {**ORDER, "resources": []}
    no_lines = {**first, "detail": {**ORDER["detail"], "lines": []}}
    assert discovered([first, no_lines], OPENAPI) == discovered([first], OPENAPI)
    assert discovered([no_lines, first], OPENAPI) == discovered([first], OPENAPI)
    # Discovery after a restart goes on from the rendered schema read back.
    restored = shape_from(discovered([first], OPENAPI))
    assert render("shop.orders", "Order Placed", merge(restored, shape_of(no_lines)), OPENAPI) == (
        discovered([first], OPENAPI)
    )


def test_names_as_aws_gives_them() -> None:
    assert schema_name("shop.orders", "Order Placed") == "shop.orders@OrderPlaced"
    assert schema_name("aws.ec2", "EC2 Instance State-change Notification") == (
        "aws.ec2@EC2InstanceStateChangeNotification"
    )
    assert pascal("line-items") == "LineItems"


def test_the_fingerprint_follows_structure_not_values() -> None:
    other_values = json.loads(json.dumps(ORDER).replace("Ada", "Grace").replace("12.5", "99"))
    assert fingerprint(other_values) == fingerprint(ORDER)
    more = {**ORDER, "detail": {**ORDER["detail"], "coupon": "X"}}
    assert fingerprint(more) != fingerprint(ORDER)
    retyped = {**ORDER, "detail": {**ORDER["detail"], "total": "12.5"}}
    assert fingerprint(retyped) != fingerprint(ORDER)
    # A later item of an array with a new field is a new structure too.
    lines: Any = ORDER["detail"]["lines"]
    longer = {**ORDER, "detail": {**ORDER["detail"], "lines": [*lines, {"sku": "c", "gift": 1}]}}
    assert fingerprint(longer) != fingerprint(ORDER)


def test_merged_shapes_keep_every_field_and_require_the_common_ones() -> None:
    a = shape_of({"id": "1", "total": 1})
    b = shape_of({"id": "2", "note": "x"})
    both = merge(a, b)
    assert set(both["properties"]) == {"id", "total", "note"}
    assert both["required"] == ["id"]
    # Merging what is already in adds nothing: the same schema, no new version.
    assert render("s", "t", merge(both, a), OPENAPI) == render("s", "t", both, OPENAPI)


def test_the_draft4_form_and_export_agree_and_validate_the_event() -> None:
    openapi = discovered([ORDER], OPENAPI)
    exported = export_draft4(openapi)
    assert exported == discovered([ORDER], DRAFT4)
    assert exported["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert exported["properties"]["detail"] == {"$ref": "#/definitions/OrderPlaced"}
    jsonschema.Draft4Validator.check_schema(exported)
    jsonschema.validate(ORDER, exported, cls=jsonschema.Draft4Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**ORDER, "detail": {**ORDER["detail"], "total": "x"}},
            exported,
            cls=jsonschema.Draft4Validator,
        )


@pytest.mark.parametrize(
    ("kind", "content", "wording"),
    [
        (
            "JSONSchemaDraft4",
            "{not json",
            "Invalid JSONSchemaDraft4 schema: the content is not JSON",
        ),
        (
            "JSONSchemaDraft4",
            "[]",
            "Invalid JSONSchemaDraft4 schema: the content must be a JSON object",
        ),
        (
            "JSONSchemaDraft4",
            '{"type": "object", "properties": {"a": {"type": "strin"}}}',
            "Invalid JSONSchemaDraft4 schema at $.properties.a.type:",
        ),
        (
            "OpenApi3",
            '{"openapi": "2.0"}',
            "Invalid OpenApi3 schema at $.openapi: must be an OpenAPI 3 version",
        ),
        (
            "OpenApi3",
            '{"openapi": "3.0.0", "paths": {}}',
            "Invalid OpenApi3 schema at $.info: is required",
        ),
        (
            "OpenApi3",
            '{"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": {},'
            ' "components": {"schemas": {"A": {"required": "x"}}}}',
            "Invalid OpenApi3 schema at $.components.schemas.A.required:",
        ),
    ],
)
def test_content_that_is_no_valid_schema_is_a_bad_request(
    kind: str, content: str, wording: str
) -> None:
    with pytest.raises(SchemaError) as raised:
        check_content(kind, content)
    assert raised.value.code == "BadRequestException"
    assert raised.value.message.startswith(wording), raised.value.message


def test_a_validator_names_the_json_path_and_the_reason() -> None:
    validator = compile_validator(OPENAPI, json.dumps(discovered([ORDER], OPENAPI)))
    assert validator.whole
    assert validator.problem(ORDER) is None
    bad = {**ORDER, "detail": {**ORDER["detail"], "customer": {"name": 3, "tier": "gold"}}}
    assert validator.problem(bad) == "$.detail.customer.name: 3 is not of type 'string'"
    missing = {**ORDER, "detail": {k: v for k, v in ORDER["detail"].items() if k != "total"}}
    assert validator.problem(missing) == "$.detail: 'total' is a required property"


def test_a_schema_of_the_detail_alone_validates_the_detail() -> None:
    detail_schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "required": ["orderId"],
        "properties": {"orderId": {"type": "string"}, "lines": {"type": "array"}},
    }
    validator = compile_validator(DRAFT4, json.dumps(detail_schema))
    assert not validator.whole
    assert validator.problem(ORDER) is None
    bad = {**ORDER, "detail": {"orderId": "o", "lines": {}}}
    assert validator.problem(bad) == "$.detail.lines: {} is not of type 'array'"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "d", "n", "k"]), inner, max_size=4)
    ),
    max_leaves=12,
)
HELD = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["a", "n"],  # n after optional properties
    "definitions": {
        "B": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    },
    "properties": {
        "a": {"type": "array", "items": {"type": "number"}},
        "b": {"$ref": "#/definitions/B"},
        "k": {"enum": ["x", "y"]},
        "d": {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
        },
        "n": {"type": "object"},
    },
}


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"a": st.lists(st.integers() | st.floats(allow_nan=False), max_size=3), "n": JSON},
        optional={"b": JSON, "k": JSON, "d": JSON},
    )
    | JSON
)
def test_the_fast_path_accepts_what_jsonschema_accepts(value: Any) -> None:
    validator = compile_validator(DRAFT4, json.dumps(HELD))
    assert msgspec_type(HELD) is not None  # the msgspec path is the one tested
    valid = jsonschema.Draft4Validator(HELD).is_valid(value)
    event = {"detail": value}
    assert (validator.problem(event) is None) == valid, value
