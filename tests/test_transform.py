"""Input transformation, checked against the examples in EventBridge's user guide
("Transforming target input": the EC2 example event, its paths map and template table)."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from pipelines.errors import ConfigError, DeliveryError
from pipelines.targets import payload_text
from pipelines.transform import compile_transform

EVENT: dict[str, Any] = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2015-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    "detail": {"instance-id": "i-0123456789", "state": "RUNNING"},
}
PATHS = {
    "timestamp": "$.time",
    "instance": "$.detail.instance-id",
    "state": "$.detail.state",
    "resource": "$.resources[0]",
}
RULE_ARN = "arn:aws:events:us-east-2:123456789012:rule/example"
INGESTED = 1_447_277_394.5  # 2015-11-11T21:29:54.500Z


def transformed(template: str, paths: dict[str, str] = PATHS, event: Any = EVENT) -> Any:
    config = {"input_transformer": {"input_paths_map": paths, "input_template": template}}
    return compile_transform("t", config)(event, "example", RULE_ARN, INGESTED)


# Template -> output rows of the user guide's table. Outputs are JSON: a string
# template yields a JSON string, so its payload is that string.
GUIDE_TABLE = [
    ('"instance <instance> is in <state>"', '"instance i-0123456789 is in RUNNING"'),
    (r'"instance \"<instance>\" is in <state>"', r'"instance \"i-0123456789\" is in RUNNING"'),
    (
        '{ "instance" : <instance>, "state": <state> }',
        '{ "instance" : "i-0123456789", "state": "RUNNING" }',
    ),
    (
        r'{ "instance" : <instance>, "state": "<state>", "instanceStatus": "instance \"<instance>\" is in <state>" }',
        r'{ "instance" : "i-0123456789", "state": "RUNNING", "instanceStatus": "instance \"i-0123456789\" is in RUNNING" }',
    ),
    (
        '{ "instance" : <instance>, "state": [ 9, <state>, true ], "Transformed" : "Yes" }',
        '{ "instance" : "i-0123456789", "state": [ 9, "RUNNING", true ], "Transformed" : "Yes" }',
    ),
    ('"<aws.events.rule-name> triggered"', '"example triggered"'),
]


@pytest.mark.parametrize(("template", "output"), GUIDE_TABLE)
def test_user_guide_examples(template: str, output: str) -> None:
    assert transformed(template) == json.loads(output)


def test_reserved_variables_in_json() -> None:
    template = (
        '{ "instance" : <instance>, "state": <state>, "ruleArn" : <aws.events.rule-arn>, '
        '"ruleName" : <aws.events.rule-name>, "originalEvent" : <aws.events.event> }'
    )
    result = transformed(template)
    assert result["instance"] == "i-0123456789"
    assert result["ruleArn"] == RULE_ARN
    assert result["ruleName"] == "example"
    # AWS: the original event without its detail, detail-type named detailType
    # (recorded from AWS: tests/test_conformance_inputs.py); .json is the whole event.
    expected = {k: v for k, v in EVENT.items() if k not in ("detail", "detail-type")}
    assert result["originalEvent"] == {**expected, "detailType": EVENT["detail-type"]}
    assert transformed('{"e": <aws.events.event.json>}') == {"e": EVENT}


def test_ingestion_time_is_iso_8601() -> None:
    assert transformed('"<aws.events.event.ingestion-time>"') == "2015-11-11T21:29:54.500Z"


def test_tutorial_example() -> None:
    event = {**EVENT, "detail-type": "customerCreated"}
    result = transformed(
        '"This event was of <detail-type> type."', {"detail-type": "$.detail-type"}, event
    )
    assert result == "This event was of customerCreated type."


def test_objects_numbers_and_booleans_keep_their_json_type() -> None:
    event = {**EVENT, "detail": {"n": 5, "ok": True, "obj": {"a": "b"}, "list": [1, "x"]}}
    paths = {"n": "$.detail.n", "ok": "$.detail.ok", "obj": "$.detail.obj", "list": "$.detail.list"}
    assert transformed('{"n": <n>, "ok": <ok>, "obj": <obj>, "list": <list>}', paths, event) == {
        "n": 5,
        "ok": True,
        "obj": {"a": "b"},
        "list": [1, "x"],
    }
    # In a string, an object loses its internal quotes (AWS's documented rule).
    assert transformed('"n=<n> ok=<ok> obj=<obj>"', paths, event) == "n=5 ok=true obj={a:b}"


def test_missing_paths_become_empty_strings() -> None:
    paths = {"gone": "$.detail.nothing", "state": "$.detail.state"}
    assert transformed('"state <state>, gone <gone>."', paths) == "state RUNNING, gone ."
    assert transformed('{"gone": <gone>, "state": <state>}', paths) == {
        "gone": "",
        "state": "RUNNING",
    }


def test_values_with_quotes_stay_valid_json() -> None:
    event = {**EVENT, "detail": {"text": 'say "hi"\nbye'}}
    paths = {"text": "$.detail.text"}
    assert transformed('{"a": <text>, "b": "quoted: <text>"}', paths, event) == {
        "a": 'say "hi"\nbye',
        "b": 'quoted: say "hi"\nbye',
    }


def test_plain_text_templates_give_text() -> None:
    assert transformed("instance <instance> is <state>") == 'instance "i-0123456789" is "RUNNING"'


def test_a_json_template_that_renders_invalid_json_fails_without_retry() -> None:
    with pytest.raises(DeliveryError) as raised:
        transformed('{"a": <instance> <state>}')
    assert raised.value.code == "INVALID_JSON" and not raised.value.retryable


def test_input_path_and_constant_input_and_jmespath() -> None:
    def apply(config: dict[str, Any]) -> Any:
        return compile_transform("t", config)(EVENT, "example", RULE_ARN, INGESTED)

    assert apply({"input_path": "$.detail"}) == EVENT["detail"]
    assert apply({"input_path": "$.resources[0]"}) == EVENT["resources"][0]
    assert apply({"input_path": "$['detail']['state']"}) == "RUNNING"
    assert apply({"input_path": "$"}) == EVENT
    assert apply({"input_path": "$.detail.nothing"}) is None
    items = {**EVENT, "detail": {"items": [{"sku": "a"}, {"sku": "b"}, {"qty": 1}]}}
    wildcard = compile_transform("t", {"input_path": "$.detail.items[*].sku"})
    assert wildcard(items, "example", RULE_ARN, INGESTED) == ["a", "b"]
    assert apply({"input_path": "$.detail.*"}) == ["i-0123456789", "RUNNING"]
    assert apply({"input": '{"fixed": [1, 2]}'}) == {"fixed": [1, 2]}
    assert apply({"input": {"fixed": True}}) == {"fixed": True}
    assert apply({"input_jmespath": "{id: id, state: detail.state}"}) == {
        "id": EVENT["id"],
        "state": "RUNNING",
    }
    assert apply({}) is EVENT
    first, second = apply({"input": '{"a": []}'}), apply({"input": '{"a": []}'})
    assert first == second and first is not second  # each delivery gets its own copy


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input": "{not json"}, r"t\.input: is not valid JSON text"),
        ({"input_path": "detail"}, r"t\.input_path: 'detail' is not a JSONPath starting with '\$'"),
        ({"input_path": "$.detail[?(@.x)]"}, r"not supported at character 9"),
        ({"input_jmespath": "detail.["}, r"t\.input_jmespath: is not a valid JMESPath"),
        (
            {"input": "{}", "input_path": "$"},
            r"t: only one of input, input_path, .* may be given, not input and input_path",
        ),
        (
            {"input_transformer": {"input_template": '"<nope>"'}},
            r"input_template: contains invalid placeholder nope",
        ),
        (
            {"input_transformer": {"input_paths_map": {"a b": "$.x"}, "input_template": "x"}},
            r"input_paths_map\.a b: a variable name is",
        ),
        (
            {"input_transformer": {"input_template": '"event: <aws.events.event>"'}},
            r"<aws\.events\.event> can only be the value of a JSON field",
        ),
        (
            {"input_transformer": {"input_template": "x" * 8193}},
            r"input_template: is required: 1 to 8192 characters",
        ),
        (
            {"input_transformer": {"input_template": "x", "paths": {}}},
            r"input_transformer\.paths: unknown setting",
        ),
    ],
)
def test_bad_declarations_name_the_setting(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_transform("t", config)


def test_string_results_carry_the_json_text_targets_send() -> None:
    """A JSON-string result equals its value and carries the text AWS sends for it
    (its SQS body): quotes included, a string template's text as rendered."""
    by_path = compile_transform("t", {"input_path": "$.detail.state"})(
        EVENT, "example", RULE_ARN, INGESTED
    )
    assert by_path == "RUNNING" and payload_text(by_path) == '"RUNNING"'
    template = '"instance <instance> is in <state>"'
    assert payload_text(transformed(template)) == '"instance i-0123456789 is in RUNNING"'
    constant = compile_transform("t", {"input": '"fixed"'})(EVENT, "example", RULE_ARN, INGESTED)
    assert constant == "fixed" and payload_text(constant) == '"fixed"'
    # Output that is not JSON (two JSON strings, plain text) is sent as it is.
    lines = '"<instance>"\n"<state>"'
    assert payload_text(transformed(lines)) == '"i-0123456789"\n"RUNNING"'
    assert payload_text(transformed("at <state>")) == 'at "RUNNING"'
    # Objects and the like as JSON; a JsonString inside one is its plain value.
    assert payload_text({"s": by_path}) == '{"s":"RUNNING"}'
    assert pickle.loads(pickle.dumps(by_path)).json == '"RUNNING"'


def test_an_object_inside_a_string_of_a_json_template_fails_without_retry() -> None:
    """AWS delivers nothing for {"payload": "<payload>"} (an object inside a string
    of a JSON template); in a string template the object loses its quotes."""
    paths = {"detail": "$.detail"}
    for template in ('{"a": "x <detail>"}', '["<detail>"]'):
        with pytest.raises(DeliveryError) as raised:
            transformed(template, paths)
        assert raised.value.code == "INVALID_JSON" and not raised.value.retryable
    assert transformed('"x <detail>"', paths) == "x {instance-id:i-0123456789,state:RUNNING}"
