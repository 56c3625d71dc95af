"""A rule's schema requirement: the events one rule matches must match a
schema version. Through boto3's PutEvents on the AWS endpoint (a refused
entry's own error), a pipeline's YAML with a real queue as the dead letter
(the rule withholds the event, the other rules deliver it, across a
restart too), and ``pipelines validate``/start locating a bad declaration."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.api import ApiServer, served_services
from pipelines.config import build_runtime, load_config
from pipelines.errors import ConfigError, ConfigInvalid
from pipelines.runtime import Runtime
from plugins.queue.store import QueueStore
from plugins.schemas.resource import registry_of

from .recorder import Recorder
from .schemas_plugin import schema_plugins
from .test_api_schemas import DRAFT4, Clients, order, until

MESSAGE = (
    "the event does not match schema shop@OrderPlaced version 1:"
    " $.detail.total: 'lots' is not of type 'number'"
)
REGISTRIES = {
    "shop": {"schemas": {"shop@OrderPlaced": {"type": "JSONSchemaDraft4", "content": DRAFT4}}}
}


def recorded(runtime: Runtime, name: str) -> Recorder:
    found = runtime.resource(name)
    assert isinstance(found, Recorder)
    return found


@pytest.fixture
async def rule_checked(tmp_path: Path) -> AsyncIterator[Clients]:
    """Rule ``eu`` (EU orders) requires the schema and rejects; rule ``all``
    (every shop event) requires nothing."""
    plugins = schema_plugins()
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=plugins)
    for name in ("eu-orders", "everything"):
        runtime.add_resource(name, "recorder", {})
    bus = runtime.bus()
    bus.put_rule("eu", pattern={"source": ["shop"], "detail": {"region": ["eu"]}})
    await bus.put_targets("eu", [{"id": "t", "resource": "eu-orders"}])
    bus.put_rule("all", pattern={"source": ["shop"]})
    await bus.put_targets("all", [{"id": "t", "resource": "everything"}])
    requirement = {
        "rule": "eu",
        "source": "shop",
        "detail_type": "Order Placed",
        "schema": "shop/shop@OrderPlaced",
    }
    runtime.add_resource("schemas", "schemas", {"registries": REGISTRIES, "require": [requirement]})
    server = ApiServer(runtime, served_services(plugins), "127.0.0.1", 0)
    await server.start()
    try:
        async with runtime:
            yield Clients(runtime, server.url)
    finally:
        await server.close()


async def test_an_entry_the_rule_matches_and_the_schema_refuses_fails_alone(
    rule_checked: Clients,
) -> None:
    answer = await rule_checked.put(
        order({"orderId": "a", "total": 1, "region": "eu"}),
        order({"orderId": "b", "total": "lots", "region": "eu"}),  # the rule's, invalid
        order({"orderId": "c", "total": "lots", "region": "us"}),  # invalid, not the rule's
    )
    assert answer["FailedEntryCount"] == 1
    good, bad, elsewhere = answer["Entries"]
    assert "EventId" in good and "EventId" in elsewhere
    assert bad == {"ErrorCode": "SchemaValidationError", "ErrorMessage": MESSAGE}
    everything = rule_checked.recorder("everything")
    await until(lambda: len(everything.received) == 2)
    assert sorted(r.payload["detail"]["orderId"] for r in everything.received) == ["a", "c"]
    eu = rule_checked.recorder("eu-orders")
    await until(lambda: len(eu.received) == 1)
    assert eu.received[0].payload["detail"]["orderId"] == "a"


async def test_the_requirement_follows_the_rule_as_it_changes(rule_checked: Clients) -> None:
    bus = rule_checked.runtime.bus()
    bus.disable_rule("eu")
    bad = order({"orderId": "b", "total": "lots", "region": "eu"})
    assert (await rule_checked.put(bad))["FailedEntryCount"] == 0  # the rule matches nothing
    bus.enable_rule("eu")
    bus.put_rule("eu", pattern={"source": ["shop"], "detail": {"region": ["us"]}})
    assert (await rule_checked.put(bad))["FailedEntryCount"] == 0
    moved = order({"orderId": "c", "total": "lots", "region": "us"})
    assert (await rule_checked.put(moved))["Entries"][0]["ErrorCode"] == "SchemaValidationError"
    await bus.delete_rule("eu", force=True)
    assert (await rule_checked.put(moved))["FailedEntryCount"] == 0


PIPELINE = """\
state: state.db
resources:
  rejected: {type: queue}
  checked: {type: queue}
  audit: {type: queue}
schemas:
  registries:
    shop:
      schemas:
        shop@OrderPlaced:
          content:
            type: object
            required: [detail]
            properties:
              detail:
                type: object
                required: [orderId, total]
                properties: {orderId: {type: string}, total: {type: number}}
rules:
  orders-checked:
    pattern: {source: [shop]}
    targets: [{id: q, resource: checked}]
    require:
      source: shop
      detail_type: Order Placed
      schema: shop/shop@OrderPlaced
      on_failure: dead_letter
      dead_letter: rejected
  audit:
    pattern: {source: [shop]}
    targets: [{id: q, resource: audit}]
"""


async def messages(state: Path, queue: str) -> list[Any]:
    async with await QueueStore.open(state) as store:
        return await store.receive(queue, 10)


async def test_a_rule_dead_letters_what_fails_and_the_other_rules_deliver_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    config = load_config(tmp_path / "pipeline.yaml")
    runtime = await build_runtime(config, plugins=schema_plugins())
    async with runtime:
        answer = await runtime.put_events(
            [
                order({"orderId": "bad", "total": "lots"}),
                order({"orderId": "good", "total": 3}),
            ]
        )
        await runtime.wait_until_idle()
        schemas = registry_of(runtime)
        assert schemas is not None and schemas.screens is not None
        screens = schemas.screens
        await until(lambda: screens.waiting == 0)
    assert answer["FailedEntryCount"] == 0
    bad_id = answer["Entries"][0]["EventId"]
    state = tmp_path / "state.db"
    [dead] = await messages(state, "rejected")
    assert json.loads(dead.body)["id"] == bad_id
    attributes = {name: value["StringValue"] for name, value in dead.message_attributes.items()}
    assert attributes == {
        "ERROR_CODE": "SchemaValidationError",
        "ERROR_MESSAGE": MESSAGE,
        "SCHEMA_ARN": "arn:aws:schemas:us-east-1:000000000000:schema/shop/shop@OrderPlaced",
        "SCHEMA_VERSION": "1",
        "RULE_NAME": "orders-checked",
    }
    checked = [json.loads(m.body)["detail"]["orderId"] for m in await messages(state, "checked")]
    assert checked == ["good"]
    audited = [json.loads(m.body)["detail"]["orderId"] for m in await messages(state, "audit")]
    assert sorted(audited) == ["bad", "good"]


async def test_the_rules_an_event_is_for_are_kept_in_its_intake_row(tmp_path: Path) -> None:
    """Withheld from the rule that dead-lettered it, the event's durable
    intake row names the rules it is still for: after a crash, the restart
    dispatches it to those only (as a replay's rows)."""
    state = tmp_path / "state.db"
    runtime = Runtime(state_path=state, plugins=schema_plugins())
    runtime.add_resource("held", "recorder", {"hold": True})
    runtime.add_resource("checked", "recorder", {})
    runtime.add_resource("dead", "recorder", {})
    bus = runtime.bus()
    bus.put_rule("checked", pattern={"source": ["shop"]})
    await bus.put_targets("checked", [{"id": "t", "resource": "checked"}])
    bus.put_rule("audit", pattern={"source": ["shop"]})
    await bus.put_targets("audit", [{"id": "t", "resource": "held"}])
    requirement = {
        "rule": "checked",
        "source": "shop",
        "detail_type": "Order Placed",
        "schema": "shop/shop@OrderPlaced",
        "on_failure": "dead_letter",
        "dead_letter": "dead",
    }
    runtime.add_resource("schemas", "schemas", {"registries": REGISTRIES, "require": [requirement]})
    async with runtime:
        answer = await runtime.put_events([order({"orderId": "bad", "total": "lots"})])
        event_id = answer["Entries"][0]["EventId"]
        with sqlite3.connect(state) as db:
            rows = db.execute("SELECT event, addressed FROM intake").fetchall()
        assert [(json.loads(body)["id"], addressed) for body, addressed in rows] == [
            (event_id, '["audit"]')
        ]
        held = recorded(runtime, "held")
        await until(lambda: held.waiting == 1)
        held.release()
        dead = recorded(runtime, "dead")
        await until(lambda: len(dead.received) == 1)
        await runtime.wait_until_idle()
        assert dead.received[0].context.attributes["RULE_NAME"] == "checked"
        assert recorded(runtime, "checked").received == []


async def test_a_rules_requirement_is_located_in_the_rule(tmp_path: Path) -> None:
    file = tmp_path / "pipeline.yaml"
    # What the rule alone can say, when the config is read.
    file.write_text(
        PIPELINE + "  scheduled:\n"
        "    schedule: rate(1 minute)\n"
        "    require: {source: a, detail_type: b, schema: r/s}\n"
        "  placed:\n"
        "    pattern: {source: [shop]}\n"
        "    require: [{bus: other, source: a, detail_type: b, schema: r/s}]\n"
    )
    with pytest.raises(ConfigInvalid) as raised:
        load_config(file)
    assert [str(problem) for problem in raised.value.problems] == [
        f"{file}:34:5: rules.scheduled.require: only a rule with an event pattern can require",
        f"{file}:37:16: rules.placed.require[0].bus: a rule's requirement is for the rule,"
        " on its bus",
    ]
    # What the schemas resource says of it, where the rule has it.
    for old, new, problem in [
        (
            "schema: shop/shop@OrderPlaced\n      on_failure",
            "schema: shop\n      on_failure",
            "26:7: rules.orders-checked.require.schema: is REGISTRY/SCHEMA, not 'shop'",
        ),
        (
            "dead_letter: rejected",
            "dead_letter: rejectd",
            "28:7: rules.orders-checked.require.dead_letter: no resource named 'rejectd'"
            " (resources: audit, checked, rejected, schemas); did you mean 'rejected'?",
        ),
    ]:
        file.write_text(PIPELINE.replace(old, new))
        with pytest.raises(ConfigInvalid) as raised:
            await build_runtime(load_config(file), plugins=schema_plugins())
        assert [str(found) for found in raised.value.problems] == [f"{file}:{problem}"]


async def test_a_requirement_naming_a_missing_rule_stops_the_start(tmp_path: Path) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=schema_plugins())
    requirement = {"rule": "gone", "source": "s", "detail_type": "d", "schema": "shop/x"}
    runtime.add_resource("schemas", "schemas", {"registries": REGISTRIES, "require": [requirement]})
    with pytest.raises(ConfigError) as raised:
        await runtime.start()
    assert str(raised.value) == (
        "resource schemas.require[0].rule: Rule gone does not exist on EventBus default."
    )
