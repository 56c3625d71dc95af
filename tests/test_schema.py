"""The published JSON Schema of configs: it accepts the examples, rejects what
validate rejects by shape, and stays in step with the config's own key sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipelines.bus import TARGET_KEYS
from pipelines.config import RULE_KEYS, TOP_KEYS
from pipelines.schedule import SCHEDULE_KEYS
from pipelines.schema import config_schema

from .helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(
    p
    for p in (ROOT / "examples").rglob("*.yaml")
    # Config tests and CloudFormation templates (examples/cloudformation) are not configs.
    if not p.name.endswith(".test.yaml") and "AWSTemplateFormatVersion" not in p.read_text()
)


def errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(config_schema())
    return [error.message for error in validator.iter_errors(document)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(config_schema())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_fits_the_schema(path: Path) -> None:
    assert errors(yaml.safe_load(path.read_text())) == []


def test_shape_problems_are_rejected() -> None:
    rule = {"pattern": {"source": ["a"]}, "targets": [{"id": "t", "resource": "f"}]}
    good = {"resources": {"f": {"type": "function", "function": "m:f"}}, "rules": {"r": rule}}
    assert errors(good) == []
    misspelt = {**good, "rules": {"r": {**rule, "patern": rule["pattern"]}}}
    assert any("'patern' was unexpected" in e for e in errors(misspelt))
    both = {**good, "rules": {"r": {**rule, "schedule": "rate(1 minute)"}}}
    assert errors(both) != []
    unknown_type = {**good, "resources": {"f": {"type": "fuction", "function": "m:f"}}}
    assert any("'fuction' is not one of" in e for e in errors(unknown_type))
    bad_setting = {**good, "resources": {"f": {"type": "function", "function": "m:f", "x": 1}}}
    assert any("'x' was unexpected" in e for e in errors(bad_setting))
    no_function = {**good, "resources": {"f": {"type": "function"}}}
    assert any("'function' is a required property" in e for e in errors(no_function))


def test_the_schema_lists_the_keys_the_config_accepts() -> None:
    schema = config_schema()
    defs = schema["$defs"]
    assert set(schema["properties"]) == TOP_KEYS
    assert set(defs["rule"]["properties"]) == RULE_KEYS
    assert set(defs["target"]["properties"]) == TARGET_KEYS
    assert set(defs["schedule"]["anyOf"][1]["properties"]) == set(SCHEDULE_KEYS)


def test_cli_prints_the_schema() -> None:
    done = run_cli("schema")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == config_schema()


def test_the_function_targets_schema_lists_its_settings() -> None:
    from plugins.function import ASYNC_SETTINGS, SETTINGS, SETTINGS_SCHEMA

    properties = SETTINGS_SCHEMA["properties"]
    assert set(properties) == SETTINGS
    assert set(properties["async_invoke"]["properties"]) == ASYNC_SETTINGS
