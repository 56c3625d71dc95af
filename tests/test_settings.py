"""The published schema and the validators agree: for each built-in target
type (and the retry policy), the settings the schema lists are the ones
``create`` accepts, and each number's range is the one ``create`` enforces.

These probe the validators by behaviour, so they fail when a setting or a
range is added to one side only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pipelines.bus import RuleTarget
from pipelines.errors import ConfigError, Path, Where
from pipelines.pluginmanager import target_types
from pipelines.schema import config_schema
from pipelines.settings import Flag, Number, Section, Settings, Shape

BUILT_IN = ["function", "queue", "stream", "topic", "log_group", "mqtt", "pipe"]
NOT_A_SETTING = "zz_not_a_setting"


def settings_schema(type_name: str) -> dict[str, Any]:
    """The schema ``pipelines schema`` publishes for a resource of ``type_name``."""
    resource = config_schema()["properties"]["resources"]["additionalProperties"]
    for variant in resource["allOf"]:
        if variant["if"]["properties"]["type"]["const"] == type_name:
            then: dict[str, Any] = variant["then"]
            return then
    raise AssertionError(f"no schema for {type_name}")


def problems(
    check: Callable[[Mapping[str, Any]], object], config: Mapping[str, Any]
) -> list[ConfigError]:
    try:
        check(config)
    except ConfigError as exc:
        return list(exc.errors)
    return []


def paths_of(found: list[ConfigError]) -> set[Path]:
    return {error.path for error in found}


def creator(type_name: str) -> Callable[[Mapping[str, Any]], object]:
    target_type = target_types()[type_name]
    return lambda config: target_type.create("probe", config)


def bounds(schema: Mapping[str, Any]) -> tuple[float, float] | None:
    """A number setting's (minimum, maximum), also when it may be ``${VAR}``."""
    for candidate in [schema, *schema.get("anyOf", [])]:
        if "minimum" in candidate and "maximum" in candidate:
            return candidate["minimum"], candidate["maximum"]
    return None


def nested(prefix: Path, value: Any) -> dict[str, Any]:
    """``value`` placed at ``prefix`` in an otherwise empty config (an index
    is a list's only item)."""
    for key in reversed(prefix):
        value = [value] if isinstance(key, int) else {key: value}
    assert isinstance(value, dict)
    return value


def objects(schema: Mapping[str, Any], prefix: Path = ()) -> list[tuple[Path, Mapping[str, Any]]]:
    """Every mapping of settings in a schema, with its path: the type's own,
    and those within (a broker, a retry policy, each consumer, each item of
    a list of subscriptions)."""
    found = [(prefix, schema)] if "properties" in schema else []
    for key, value in schema.get("properties", {}).items():
        if not isinstance(value, Mapping):
            continue
        if value.get("type") == "object":
            found += objects(value, (*prefix, key))
            if isinstance(value.get("additionalProperties"), Mapping):
                found += objects(value["additionalProperties"], (*prefix, key, "probe"))
        if value.get("type") == "array" and isinstance(value.get("items"), Mapping):
            found += objects(value["items"], (*prefix, key, 0))
    return found


def filled(node: Mapping[str, Any]) -> dict[str, Any]:
    """A node's required text settings, given, so a probe is not only
    refused for their lack."""
    properties = node["properties"]
    return {
        key: "probe" for key in node.get("required", []) if properties[key].get("type") == "string"
    }


def about(found: list[ConfigError], prefix: Path, key: str) -> bool:
    """Whether one of the problems is about ``key`` of the node at ``prefix``:
    at its path, or (a store's own check, which names the key in its message)
    at the node within a resource's settings."""
    return any(
        e.path == (*prefix, key) or (prefix != () and e.path == prefix and key in e.message)
        for e in found
    )


@pytest.mark.parametrize("type_name", BUILT_IN)
def test_the_schema_lists_what_create_accepts(type_name: str) -> None:
    schema = settings_schema(type_name)
    check = creator(type_name)
    for prefix, node in objects(schema):
        accepted = set(node["properties"]) - ({"type"} if prefix == () else set())
        for key in accepted:
            unknown = [
                e
                for e in problems(check, nested(prefix, {key: None}))
                if e.path == (*prefix, key) and "unknown setting" in e.message
            ]
            assert unknown == [], (
                f"{type_name}: the schema lists {(*prefix, key)}, create refuses it"
            )
        refused = problems(check, nested(prefix, {**filled(node), NOT_A_SETTING: 1}))
        assert about(refused, prefix, NOT_A_SETTING), (
            f"{type_name}: create accepts {NOT_A_SETTING} at {prefix}, the schema does not list it"
        )
        if node is schema:  # the type's own settings: its table, without "type"
            table = target_types()[type_name].settings
            assert table is not None and set(table.names) == accepted


@pytest.mark.parametrize("type_name", BUILT_IN)
def test_each_ranges_in_the_schema_is_the_one_create_enforces(type_name: str) -> None:
    check = creator(type_name)
    checked = 0
    for prefix, node in objects(settings_schema(type_name)):
        ranged = {k: b for k, v in node["properties"].items() if (b := bounds(v)) is not None}
        # Every number at its minimum at once: some maxima are at least another setting.
        lowest = {**filled(node), **{key: low for key, (low, _) in ranged.items()}}
        found = problems(check, nested(prefix, lowest))
        assert not any(about(found, prefix, key) for key in ranged), (
            f"{type_name}: a minimum in {prefix} is refused: {found}"
        )
        for key, (low, high) in ranged.items():
            found = problems(check, nested(prefix, {**lowest, key: high}))
            assert not about(found, prefix, key), f"{type_name}: {prefix} refuses {key}: {high}"
            for outside in (low - 1, high + 1):
                found = problems(check, nested(prefix, {**lowest, key: outside}))
                assert about(found, prefix, key), f"{type_name}: {prefix} accepts {key}: {outside}"
            checked += 1
    assert checked > 0, f"{type_name}: no ranged setting was probed"


def test_the_retry_policys_schema_is_the_one_put_targets_enforces() -> None:
    schema = config_schema()["$defs"]["target"]["properties"]["retry_policy"]

    def check(policy: Mapping[str, Any]) -> object:
        return RuleTarget.parse(Where("t"), {"id": "t", "resource": "r", "retry_policy": policy})

    assert set(schema["properties"]) == {"maximum_retry_attempts", "maximum_event_age"}
    assert ("retry_policy", NOT_A_SETTING) in paths_of(problems(check, {NOT_A_SETTING: 1}))
    for key, setting in schema["properties"].items():
        low, high = setting["minimum"], setting["maximum"]
        assert problems(check, {key: low}) == problems(check, {key: high}) == []
        for outside in (low - 1, high + 1):
            assert [e.path for e in problems(check, {key: outside})] == [("retry_policy", key)]


def test_a_settings_table_is_its_own_schema() -> None:
    table = Settings(
        {
            "size": Number(10, 1, 100, integer=True, description="how many"),
            "ratio": Number(None, 0, 0.5),
            "port": Number(1883, 1, 65535, integer=True, variable=True),
            "on": Flag(False),
            "name": Shape({"type": "string"}),
            "inner": Section(Settings({"x": Flag(None)})),
        },
        required=("name",),
    )
    schema = table.schema()
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["name"]
    properties = schema["properties"]
    assert properties["size"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 10,
        "description": "how many",
    }
    assert properties["ratio"] == {"type": "number", "minimum": 0, "maximum": 0.5}
    assert properties["port"]["anyOf"][0]["maximum"] == 65535
    assert properties["port"]["anyOf"][1]["type"] == "string"
    assert properties["on"] == {"type": "boolean", "default": False}
    assert properties["inner"] == {
        "type": "object",
        "properties": {"x": {"type": "boolean"}},
        "additionalProperties": False,
    }


def test_a_settings_table_reads_what_it_declares() -> None:
    table = Settings({"size": Number(10, 1, 100, integer=True), "on": Flag(True)})
    where = Where("thing")
    assert table.number(where, {}, "size") == 10
    assert table.number(where, {"size": 7}, "size") == 7
    assert table.flag(where, {}, "on") is True
    with pytest.raises(ConfigError) as caught:
        table.number(where, {"size": 2.5}, "size")
    assert (caught.value.path, caught.value.message) == (("size",), "must be an integer, not 2.5")
    with pytest.raises(ConfigError) as caught:
        table.number(where, {"size": 5}, "size", low=6)
    assert caught.value.message == "must be between 6 and 100, not 5"
    with pytest.raises(ConfigError) as caught:
        table.check_keys(where, {"sise": 1, "of": 2, "on": True})
    assert [e.path for e in caught.value.errors] == [("sise",), ("of",)]
