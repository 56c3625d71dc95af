"""The queue target in a running bus, and ``pipelines queue`` on the command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ConfigError, DeliveryError
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext
from plugins.queue.store import QueueStore
from plugins.queue.target import QueueType

from .helpers import pipelines_command
from .recorder import plugin_manager

ENTRY = {"Source": "shop", "DetailType": "order", "Detail": '{"order": 7, "customer": "ann"}'}


async def received(path: Path, queue: str, count: int = 10) -> list[Any]:
    async with await QueueStore.open(path) as store:
        return await store.receive(queue, count)


async def test_matched_events_become_messages(state_location: str) -> None:
    state = state_location
    runtime = Runtime(state_path=state, plugins=plugin_manager())
    runtime.add_resource("orders", "queue", {"visibility_timeout": 60})
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets(
        "r",
        [
            {"id": "whole", "resource": "orders"},
        ],
    )
    runtime.add_resource("details", "queue", {})
    bus.put_rule("d", pattern={"source": ["shop"]})
    await bus.put_targets("d", [{"id": "detail", "resource": "details", "input_path": "$.detail"}])
    async with runtime:
        await runtime.put_events([ENTRY, ENTRY])
        await runtime.wait_until_idle()
    messages = await received(state, "orders")
    assert len(messages) == 2
    event = json.loads(messages[0].body)
    assert event["source"] == "shop"
    assert event["detail"] == {"order": 7, "customer": "ann"}
    [first, _] = await received(state, "details")
    assert json.loads(first.body) == {"order": 7, "customer": "ann"}
    async with await QueueStore.open(state) as store:
        assert (await store.get_attributes("orders")).visibility_timeout == 60


async def test_a_queue_as_dead_letter_target_carries_the_error_attributes(
    state_location: str,
) -> None:
    state = state_location
    runtime = Runtime(state_path=state, plugins=plugin_manager())
    runtime.add_resource("broken", "recorder", {"fail": -1, "retryable": False})
    runtime.add_resource("dlq", "queue", {})
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets("r", [{"id": "t", "resource": "broken", "dead_letter": "dlq"}])
    async with runtime:
        await runtime.put_events([ENTRY])
        await runtime.wait_until_idle()
    [dead] = await received(state, "dlq")
    assert json.loads(dead.body)["detail"]["order"] == 7
    attributes = {name: value["StringValue"] for name, value in dead.message_attributes.items()}
    assert attributes["RULE_NAME"] == "r"
    assert attributes["TARGET_ID"] == "t"
    assert attributes["RETRY_ATTEMPTS"] == "0"
    assert "ERROR_CODE" in attributes
    assert "EXHAUSTED_RETRY_CONDITION" not in attributes  # not retryable: none exhausted


async def test_fifo_target_groups_by_jmespath_and_stores_an_event_once(state_location: str) -> None:
    state = state_location
    runtime = Runtime(state_path=state, plugins=plugin_manager())
    runtime.add_resource("orders.fifo", "queue", {"message_group_id_jmespath": "detail.customer"})
    bus = runtime.bus()
    bus.put_rule("r", pattern={"source": ["shop"]})
    await bus.put_targets("r", [{"id": "t", "resource": "orders.fifo"}])
    bob = dict(ENTRY, Detail='{"order": 8, "customer": "bob"}')
    async with runtime:
        await runtime.put_events([ENTRY, bob, ENTRY])
        await runtime.wait_until_idle()
        target = runtime.resource("orders.fifo")
        # The same event delivered again (a retry) is deduplicated by its id.
        event = {"id": "fixed-id", "detail": {"customer": "ann"}}
        from pipelines.targets import DeliveryContext

        context = DeliveryContext("r", "t", event)
        first = await target.deliver(event, context)
        again = await target.deliver(event, context)
        assert first == again
    messages = await received(state, "orders.fifo")
    groups = [m.attributes["MessageGroupId"] for m in messages]
    assert sorted(groups) == ["ann", "ann", "ann", "bob"]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("q", {"visibility_timeout": -1}, "visibility_timeout"),
        ("q", {"visibilty_timeout": 5}, "did you mean 'visibility_timeout'"),
        ("q.fifo", {"message_group_id": "g", "message_group_id_jmespath": "a"}, "not both"),
        ("q", {"message_group_id": "g"}, "for FIFO queues"),
        ("q.fifo", {"message_group_id_jmespath": "detail.["}, "message_group_id_jmespath"),
        ("bad name", {}, "queue name"),
    ],
)
def test_queue_settings_are_checked(name: str, settings: dict[str, Any], message: str) -> None:
    runtime = Runtime(plugins=plugin_manager())
    with pytest.raises(ConfigError) as caught:
        runtime.add_resource(name, "queue", settings)
    assert message in str(caught.value)


async def test_a_queue_needs_a_state_database() -> None:
    runtime = Runtime(plugins=plugin_manager())
    runtime.add_resource("q", "queue", {})
    with pytest.raises(Exception, match="state database"):
        await runtime.start()
    await runtime.stop()


# -- the command line ----------------------------------------------------------


def queue_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*pipelines_command(), "queue", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def printed(result: subprocess.CompletedProcess[str]) -> Any:
    """What a command printed: one JSON document (--output json, the default)."""
    return json.loads(result.stdout)


def test_queue_commands_against_a_config_state_database(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text("state: data/state.db\n")
    policy = '{"dead_letter_queue": "dead", "max_receive_count": 1}'
    queue_cli("create", "dead", cwd=tmp_path)
    created = printed(
        queue_cli(
            "create",
            "work",
            "-a",
            "visibility_timeout=0",
            "-a",
            f"redrive_policy={policy}",
            cwd=tmp_path,
        )
    )
    assert created["Attributes"]["redrive_policy"]["max_receive_count"] == 1
    assert (tmp_path / "data" / "state.db").exists()
    sent = printed(queue_cli("send", "work", "one", "two", "-a", "kind=test", cwd=tmp_path))
    assert [answer["Id"] for answer in sent] == ["0", "1"]
    first = printed(queue_cli("receive", "work", "-n", "10", cwd=tmp_path))
    assert sorted(m["Body"] for m in first) == ["one", "two"]
    assert first[0]["MessageAttributes"]["kind"]["StringValue"] == "test"
    # received once already: the next receive moves both to the dead-letter queue
    assert printed(queue_cli("receive", "work", "-n", "10", cwd=tmp_path)) == []
    stats = printed(queue_cli("stats", "dead", cwd=tmp_path))
    assert stats["ApproximateNumberOfMessages"] == 2
    assert printed(queue_cli("redrive", "dead", cwd=tmp_path)) == {"QueueName": "dead", "Moved": 2}
    consumed = printed(queue_cli("receive", "work", "-n", "10", "--delete", cwd=tmp_path))
    assert len(consumed) == 2
    assert printed(queue_cli("stats", "work", cwd=tmp_path))["ApproximateNumberOfMessages"] == 0
    queue_cli("send", "work", "three", cwd=tmp_path)
    assert printed(queue_cli("purge", "work", cwd=tmp_path)) == {"QueueName": "work", "Purged": 1}
    assert printed(queue_cli("list", cwd=tmp_path)) == ["dead", "work"]


def test_queue_command_errors_are_one_line(tmp_path: Path) -> None:
    state = tmp_path / "s.db"
    absent = queue_cli("send", "nope", "x", "--state", str(state), cwd=tmp_path, check=False)
    assert absent.returncode == 1
    assert (
        absent.stderr == f"error: state database {state} does not exist: run the pipeline first\n"
    )
    assert not state.exists()  # only create makes a database
    queue_cli("create", "q", "--state", str(state), cwd=tmp_path)
    result = queue_cli("send", "nope", "x", "--state", str(state), cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: QueueDoesNotExist: queue 'nope' does not exist"
    lost = queue_cli("list", cwd=tmp_path, check=False)
    assert lost.returncode == 1
    assert "--config" in lost.stderr
    assert "Traceback" not in lost.stderr


def test_queue_reads_of_a_mistyped_state_database_fail_and_create_nothing(
    tmp_path: Path,
) -> None:
    result = queue_cli("list", "--state", "typo.db", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: state database typo.db does not exist: run the pipeline first"
    ]
    assert result.stdout == ""
    assert not (tmp_path / "typo.db").exists()
    stats = queue_cli("stats", "q", "--state", "typo.db", cwd=tmp_path, check=False)
    assert stats.returncode != 0 and "typo.db does not exist" in stats.stderr
    assert list(tmp_path.iterdir()) == []


async def test_a_queue_target_delivered_to_before_start_is_a_retryable_error() -> None:
    target = QueueType().create("jobs", {})
    context = DeliveryContext("rule", "t", {"id": "1"})
    with pytest.raises(DeliveryError) as raised:
        await target.deliver({"n": 1}, context)
    assert raised.value.code == "NotRunning" and raised.value.retryable
    assert "queue jobs is not running" in raised.value.message


def test_send_reports_each_failed_entry(tmp_path: Path) -> None:
    state = str(tmp_path / "s.db")
    queue_cli("create", "q", "--state", state, cwd=tmp_path)
    result = queue_cli("send", "q", "ok", "bad \x01", "--state", state, cwd=tmp_path, check=False)
    assert result.returncode == 1
    answers = printed(result)
    assert answers[0]["Id"] == "0"
    assert "MessageId" in answers[0]
    assert answers[1]["Code"] == "InvalidMessageContents"


async def test_empty_dead_letter_attributes_are_left_out(tmp_path: Path) -> None:
    from pipelines.targets import DeliveryContext

    state = tmp_path / "state.db"
    runtime = Runtime(state_path=state, plugins=plugin_manager())
    runtime.add_resource("dlq", "queue", {})
    async with runtime:
        attributes = {"ERROR_CODE": "TimeoutError", "ERROR_MESSAGE": ""}
        context = DeliveryContext("r", "t", {"id": "e"}, attributes=attributes)
        await runtime.resource("dlq").deliver({"id": "e"}, context)
    [dead] = await received(state, "dlq")
    assert dead.message_attributes == {
        "ERROR_CODE": {"DataType": "String", "StringValue": "TimeoutError"}
    }
