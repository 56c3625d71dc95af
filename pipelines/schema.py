"""The JSON Schema of pipeline configs (``pipelines schema``), for editors.

Point an editor at it (for example with a ``# yaml-language-server:
$schema=pipelines.schema.json`` comment) to get completion and checks while
typing. It follows the installed plugins: each target type adds its
``settings_schema``. ``pipelines validate`` remains the full check (references,
pattern and schedule semantics); the schema covers the shape. A value written
as ``${VAR}`` is a string to the schema even where it becomes a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from pipelines.alarms import COMPOSITE_ALARM_KEYS, METRIC_ALARM_KEYS
from pipelines.archive import ARCHIVE_KEYS
from pipelines.bus import TARGET_KEYS
from pipelines.config import RULE_KEYS, TOP_KEYS
from pipelines.delivery import RETRY_POLICY
from pipelines.pluginmanager import target_types
from pipelines.runtime import DURABILITIES
from pipelines.schedule import SCHEDULE_KEYS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NAME = {"type": "string", "pattern": "^[.\\-_A-Za-z0-9]{1,64}$"}
_JSONPATH = {"type": "string", "pattern": "^\\$"}


class UndescribedSetting(LookupError):
    """A key the validator accepts has no description here: add one."""


def declared(keys: Iterable[str], described: Mapping[str, Any]) -> dict[str, Any]:
    """The properties of a node: one for each key its validator accepts (the
    key sets in config, bus, schedule, archive, alarms), in their order here.
    A description of a key the validator does not accept is left out; a key
    it accepts without a description is a mistake in this module."""
    keys = set(keys)
    missing = sorted(keys - set(described))
    if missing:
        raise UndescribedSetting(f"the schema does not describe {', '.join(missing)}")
    return {key: schema for key, schema in described.items() if key in keys}


def config_schema(plugins: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """The schema of one config file, with the target types of ``plugins``."""
    return {
        "$schema": DIALECT,
        "$id": "https://pipelines.invalid/config.schema.json",
        "title": "pipelines config",
        "type": "object",
        "additionalProperties": False,
        "properties": declared(TOP_KEYS, _sections(plugins)),
        "$defs": {
            "rule": _rule(plugins),
            "target": _target(),
            "schedule": _schedule(),
            "archive": _archive(),
            "metric_alarm": _metric_alarm(),
            "composite_alarm": _composite_alarm(),
        },
    }


def _sections(plugins: pluggy.PluginManager | None) -> dict[str, Any]:
    return {
        "state": {
            "description": "SQLite state database, relative to the config; false for none",
            "anyOf": [{"type": "string", "minLength": 1}, {"const": False}, {"type": "null"}],
            "default": ".pipelines/state.db",
        },
        "durability": {
            "enum": list(DURABILITIES),
            "default": "durable",
            "description": "durable: put answers once its events are in the state database;"
            " memory: at once (faster; a crash loses what is not delivered)",
        },
        "api": {
            "description": "where `pipelines run` serves AWS's APIs (events, ...) for boto3,"
            " the AWS CLI and the SDKs: HOST:PORT, or a mapping; --api overrides the address",
            "anyOf": [
                {"type": ["string", "integer"]},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "listen": {"type": ["string", "integer"], "description": "HOST:PORT"},
                        "access_keys": {
                            "type": "object",
                            "description": "with keys, SigV4 signatures are checked (strict)",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["secret"],
                                "properties": {
                                    "secret": {"type": "string", "minLength": 1},
                                    "account": {"type": "string", "pattern": "^[0-9]{12}$"},
                                    "org": {"type": "string", "pattern": "^o-[a-z0-9]{10,32}$"},
                                },
                            },
                        },
                        "tls": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["certificate", "key"],
                            "properties": {
                                "certificate": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                        "console": {
                            "type": "boolean",
                            "description": "serve the web console under /console"
                            " (its login link is logged at start)",
                        },
                    },
                },
            ],
        },
        # -- bus permissions --
        "account": {
            "type": "string",
            "pattern": "^[0-9]{12}$",
            "description": "the account that owns the buses (default 000000000000)",
        },
        "buses": {
            "description": "extra event buses: names, or names to their settings",
            "oneOf": [
                {"type": "array", "items": _NAME},
                {
                    "type": "object",
                    "propertyNames": _NAME,
                    "additionalProperties": {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "properties": {
                            "policy": {
                                "type": ["object", "string"],
                                "description": "the bus's resource policy (IAM JSON)",
                            },
                            "statements": {
                                "type": "array",
                                "items": {"type": "object"},
                                "description": "the policy's statements alone",
                            },
                            "account": {"type": "string", "pattern": "^[0-9]{12}$"},
                        },
                    },
                },
            ],
        },
        # -- end of bus permissions --
        "resources": {
            "type": "object",
            "description": "target resources by name",
            "additionalProperties": _resource(plugins),
        },
        "pipes": {
            "type": "object",
            "description": "EventBridge Pipes by name, each a resource of type pipe",
            "additionalProperties": _section(plugins, "pipe"),
        },
        "state_machines": {
            "type": "object",
            "description": "Step Functions state machines by name, each a resource of type"
            " state_machine (docs/states.md): definition or definition_file,"
            " state_machine_type, role_arn",
            "additionalProperties": _section(plugins, "state_machine"),
        },
        "schemas": {
            "description": "the schema registry (the schemas plugin; docs/schemas.md):"
            " registries, discoverers, require",
            **_section(plugins, "schemas"),
        },
        "rules": {
            "type": "object",
            "description": "rules by name",
            "propertyNames": _NAME,
            "additionalProperties": {"$ref": "#/$defs/rule"},
        },
        "schedules": {
            "type": "object",
            "description": "EventBridge Scheduler's schedules by name or group/name (the"
            " scheduler plugin; docs/scheduler.md)",
            "propertyNames": {
                "type": "string",
                "pattern": "^([0-9A-Za-z._-]{1,64}/)?[0-9A-Za-z._-]{1,64}$",
            },
            "additionalProperties": {
                "type": "object",
                "required": ["expression", "target"],
                "properties": {
                    "group": {"type": "string"},
                    "expression": {"type": "string", "description": "cron(), rate() or at()"},
                    "timezone": {"type": "string"},
                    "start_date": {"type": "string"},
                    "end_date": {"type": "string"},
                    "description": {"type": "string", "maxLength": 512},
                    "state": {"enum": ["ENABLED", "DISABLED"]},
                    "flexible_window_minutes": {"type": "integer", "minimum": 0, "maximum": 1440},
                    "action_after_completion": {"enum": ["NONE", "DELETE"]},
                    "missed_runs": {"enum": ["skip", "fire_once"]},
                    "target": {
                        "type": "object",
                        "description": "resource (a name) or arn; input; retry_policy;"
                        " dead_letter; eventbridge {detail_type, source}; sqs"
                        " {message_group_id}",
                    },
                },
            },
        },
        "schedule_groups": {
            "type": "object",
            "description": "EventBridge Scheduler's schedule groups by name, with their tags",
            "additionalProperties": {
                "anyOf": [
                    {"type": "null"},
                    {"type": "object", "properties": {"tags": {"type": "object"}}},
                ]
            },
        },
        "archives": {
            "type": "object",
            "description": "archives by name: the events a bus keeps for replays",
            "propertyNames": {"type": "string", "pattern": "^[.\\-_A-Za-z0-9]{1,48}$"},
            "additionalProperties": {"$ref": "#/$defs/archive"},
        },
        "alarms": {
            "type": "object",
            "description": "alarms by name: metric alarms, or composite ones with a rule",
            "propertyNames": {"type": "string", "minLength": 1, "maxLength": 255},
            "additionalProperties": {
                "oneOf": [{"$ref": "#/$defs/metric_alarm"}, {"$ref": "#/$defs/composite_alarm"}]
            },
        },
        "cluster": {
            "type": "object",
            "description": "runners sharing work through a broker: a source of `type`"
            " (default mqtt, with its settings) on the group's intake topic",
            "required": ["group"],
            "properties": {
                "group": {"type": "string", "pattern": "^[A-Za-z0-9_.\\-]{1,64}$"},
                "type": {"type": "string", "default": "mqtt"},
                "topic": {"type": "string", "description": "default pipelines/GROUP/events"},
                "bus": {"type": "string", "default": "default"},
            },
        },
    }


def _resource(plugins: pluggy.PluginManager | None) -> dict[str, Any]:
    types = target_types(plugins)
    variants = []
    for name, target_type in types.items():
        described = target_type.described_settings()
        settings = dict(described or {})
        properties = {"type": {"const": name}, **settings.get("properties", {})}
        variant: dict[str, Any] = {
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {
                "description": target_type.description,
                "properties": properties,
                "required": ["type", *settings.get("required", [])],
            },
        }
        if described is not None:
            variant["then"]["additionalProperties"] = False
        variants.append(variant)
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": sorted(types), "description": "the target type"}},
        "allOf": variants,
    }


def _section(plugins: pluggy.PluginManager | None, type_name: str) -> dict[str, Any]:
    """A section that becomes a resource of ``type_name``: that type's
    settings, when its plugin is loaded."""
    found = target_types(plugins).get(type_name)
    described = found.described_settings() if found is not None else None
    if described is None:
        return {"type": "object"}
    return {"type": "object", **described, "additionalProperties": False}


def _rule(plugins: pluggy.PluginManager | None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": declared(
            RULE_KEYS,
            {
                "bus": {**_NAME, "default": "default"},
                "description": {"type": "string", "maxLength": 512},
                "state": {"enum": ["ENABLED", "DISABLED"], "default": "ENABLED"},
                "pattern": {"type": "object", "description": "an EventBridge event pattern"},
                "schedule": {"$ref": "#/$defs/schedule"},
                "targets": {"type": "array", "items": {"$ref": "#/$defs/target"}, "maxItems": 5},
                "require": _rule_requirement(plugins),
            },
        ),
        "oneOf": [{"required": ["pattern"]}, {"required": ["schedule"]}],
    }


def _rule_requirement(plugins: pluggy.PluginManager | None) -> dict[str, Any]:
    """A rule's ``require``: the ``schemas`` section's requirement without
    ``bus`` and ``rule`` (the rule's), one or a list, when its plugin is loaded."""
    section = _section(plugins, "schemas")
    item = section.get("properties", {}).get("require", {}).get("items")
    if item is None:
        one: dict[str, Any] = {"type": "object"}
    else:
        kept = {k: v for k, v in item["properties"].items() if k not in ("bus", "rule")}
        one = {**item, "properties": kept}
    return {
        "description": "the schema the events this rule matches must match (docs/schemas.md)",
        "oneOf": [one, {"type": "array", "items": one}],
    }


def _target() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "resource"],
        "properties": declared(
            TARGET_KEYS,
            {
                "id": {"type": "string", "minLength": 1, "maxLength": 64},
                "resource": {"type": "string", "description": "a resource name"},
                "dead_letter": {"type": "string", "description": "a resource name"},
                "http_parameters": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "an api_destination's path, header and query values"
                    " (a value starting with $ is read from the event)",
                    "properties": {
                        "path_parameter_values": {"type": "array", "items": {"type": "string"}},
                        "header_parameters": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "query_string_parameters": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
                "input": {"type": "string", "description": "constant JSON text"},
                "input_path": _JSONPATH,
                "input_jmespath": {"type": "string"},
                "input_transformer": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["input_template"],
                    "properties": {
                        "input_paths_map": {
                            "type": "object",
                            "additionalProperties": _JSONPATH,
                            "maxProperties": 100,
                        },
                        "input_template": {"type": "string", "minLength": 1, "maxLength": 8192},
                    },
                },
                "retry_policy": RETRY_POLICY.schema(),
            },
        ),
    }


def _schedule() -> dict[str, Any]:
    expression = {
        "type": "string",
        "pattern": "^(cron|rate|at)\\(.*\\)$",
        "description": "cron(m h dom mon dow y), rate(N unit) or at(yyyy-mm-ddThh:mm:ss)",
    }
    properties: dict[str, Any] = {
        "expression": expression,
        "timezone": {"type": "string", "description": "IANA time zone, default UTC"},
        "start_date": {"type": "string"},
        "end_date": {"type": "string"},
        "flexible_window_minutes": {"type": "integer", "minimum": 0, "maximum": 1440},
        "missed_runs": {"enum": ["skip", "fire_once"], "default": "skip"},
    }
    return {
        "anyOf": [
            expression,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["expression"],
                "properties": declared(SCHEDULE_KEYS, properties),
            },
        ]
    }


def _archive() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": declared(
            ARCHIVE_KEYS,
            {
                "bus": {
                    **_NAME,
                    "default": "default",
                    "description": "the bus whose events it keeps",
                },
                "pattern": {"type": "object", "description": "keep only matching events"},
                "retention_days": {
                    "type": "integer",
                    "minimum": 0,
                    "default": 0,
                    "description": "days events are kept; 0 keeps them forever",
                },
                "durability": {
                    "enum": ["normal", "strict"],
                    "default": "normal",
                    "description": "normal survives a process crash; strict also a power loss",
                },
                "description": {"type": "string", "maxLength": 512},
            },
        ),
    }


def _alarm_common() -> dict[str, Any]:
    resources = {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5},
        ]
    }
    return {
        "description": {"type": "string", "maxLength": 1024},
        "bus": {**_NAME, "default": "default", "description": "where its state changes go"},
        "actions_enabled": {"type": "boolean", "default": True},
        "actions": {
            "type": "object",
            "description": "resources that receive the state-change event, per new state",
            "additionalProperties": False,
            "properties": {"alarm": resources, "ok": resources, "insufficient_data": resources},
        },
    }


def _metric_alarm() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["namespace", "metric_name", "threshold", "period", "evaluation_periods"],
        "properties": declared(
            METRIC_ALARM_KEYS,
            {
                "namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                "metric_name": {"type": "string", "minLength": 1, "maxLength": 255},
                "dimensions": {
                    "type": "object",
                    "maxProperties": 30,
                    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 1024},
                },
                "statistic": {
                    "type": "string",
                    "pattern": "^(SampleCount|Average|Sum|Minimum|Maximum"
                    "|p(\\d{1,2}(\\.\\d{0,10})?|100))$",
                    "default": "Average",
                },
                "period": {
                    "type": "integer",
                    "description": "seconds: 10, 20, 30 or a multiple of 60",
                    "anyOf": [{"enum": [10, 20, 30]}, {"multipleOf": 60, "minimum": 60}],
                },
                "evaluation_periods": {"type": "integer", "minimum": 1},
                "datapoints_to_alarm": {"type": "integer", "minimum": 1},
                "threshold": {"type": "number"},
                "comparison_operator": {
                    "enum": [
                        "GreaterThanOrEqualToThreshold",
                        "GreaterThanThreshold",
                        "LessThanThreshold",
                        "LessThanOrEqualToThreshold",
                    ],
                    "default": "GreaterThanOrEqualToThreshold",
                },
                "treat_missing_data": {
                    "enum": ["missing", "ignore", "breaching", "notBreaching"],
                    "default": "missing",
                },
                **_alarm_common(),
            },
        ),
    }


def _composite_alarm() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["rule"],
        "properties": declared(
            COMPOSITE_ALARM_KEYS,
            {
                "rule": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 10240,
                    "description": "ALARM(name), OK(name), INSUFFICIENT_DATA(name), TRUE, FALSE,"
                    " AND, OR, NOT and parentheses",
                },
                **_alarm_common(),
            },
        ),
    }
