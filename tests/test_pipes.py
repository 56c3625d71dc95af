"""EventBridge Pipes: sources, filters, enrichment, targets, failures, states.

Real runtimes on real state databases: a pipe reads a queue or a stream
through their stores, calls real function resources (tests.pipes_functions)
and writes to real queues and streams.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

import plugins.pipes
from pipelines.config import build_runtime, load_config
from pipelines.errors import ConfigInvalid, Problem
from pipelines.runtime import Runtime
from plugins.pipes.pipe import PipeTarget
from plugins.pipes.store import PipeStore
from plugins.queue.store import QueueStore, SendEntry
from plugins.stream.store import StreamStore

from . import pipes_functions as functions
from .recorder import plugin_manager


def manager() -> pluggy.PluginManager:
    """The installed plugins, the recorder, and this plugin (until installed)."""
    found = plugin_manager()
    if found.get_plugin("pipes") is None:
        found.register(plugins.pipes, name="pipes")
    return found


@pytest.fixture(autouse=True)
def _reset() -> None:
    functions.reset()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def batches(name: str) -> list[Any]:
    return functions.batches.get(name, [])


async def send(runtime: Runtime, queue: str, bodies: list[Any], **options: Any) -> None:
    async with await QueueStore.open(runtime.state_path) as store:
        for start in range(0, len(bodies), 10):
            entries = [
                SendEntry(
                    json.dumps(body) if not isinstance(body, str) else body,
                    id=str(n),
                    **(options(body) if callable(options) else options),  # type: ignore[operator]
                )
                for n, body in enumerate(bodies[start : start + 10])
            ]
            _, failed = await store.send_batch(queue, entries)
            assert not failed


async def queue_size(runtime: Runtime, queue: str) -> int:
    async with await QueueStore.open(runtime.state_path) as store:
        stats = await store.stats(queue)
    return int(stats["ApproximateNumberOfMessages"]) + int(
        stats["ApproximateNumberOfMessagesNotVisible"]
    )


async def put_records(runtime: Runtime, stream: str, records: list[tuple[str, Any]]) -> None:
    async with await StreamStore.open(runtime.state_path) as store:
        await store.put_records(
            stream,
            [{"Data": json.dumps(data).encode(), "PartitionKey": key} for key, data in records],
        )


async def stream_data(runtime: Runtime, stream: str) -> list[Any]:
    async with await StreamStore.open(runtime.state_path) as store:
        return [record.json() for record in await store.stream(stream).records()]


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


async def check(paths: list[Path]) -> list[Problem]:
    """``pipelines validate``'s problems, with this plugin loaded."""
    try:
        await build_runtime(load_config(paths), state_path=None, plugins=manager())
    except ConfigInvalid as exc:
        return exc.problems
    return []


async def runtime_of(path: Path, state: str) -> Runtime:
    return await build_runtime(load_config(path), state_path=state, plugins=manager())


ORDERS = """
resources:
  orders: {type: queue, visibility_timeout: 1}
  enrich: {type: function, function: "tests.pipes_functions:enrich"}
  shipped: {type: stream, partition_key_jmespath: detail.id}
pipes:
  orders-to-stream:
    source: orders
    source_parameters: {batch_size: 10}
    filters:
      - {body: {kind: [order]}}
    enrichment: enrich
    target: shipped
"""


async def test_a_queue_through_a_filter_and_an_enrichment_to_a_stream(
    tmp_path: Path, state_location: str
) -> None:
    runtime = await runtime_of(config(tmp_path, ORDERS), state_location)
    async with runtime:
        await send(
            runtime,
            "orders",
            [
                {"kind": "order", "id": "a", "total": 150},
                {"kind": "refund", "id": "b", "total": 10},
                {"kind": "order", "id": "c", "total": 20},
                "not json at all",
            ],
        )
        await until(lambda: _count(runtime, "shipped", 2))
        await until(lambda: _empty(runtime, "orders"))
        pipe = runtime.resource("orders-to-stream")
        assert isinstance(pipe, PipeTarget)
        assert pipe.counts == {
            "received": 4,
            "filtered": 2,
            "enriched": 2,
            "delivered": 2,
            "failed": 0,
        }
    shipped = await stream_data(runtime, "shipped")
    assert sorted(shipped, key=lambda order: order["id"]) == [
        {"kind": "order", "id": "a", "total": 150, "tier": "gold"},
        {"kind": "order", "id": "c", "total": 20, "tier": "plain"},
    ]
    # The enrichment saw only what the filter let through, as SQS records.
    [record] = [
        r for batch in batches("enrich") for r in batch if json.loads(r["body"])["id"] == "a"
    ]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:000000000000:orders"
    assert json.loads(record["body"])["id"] == "a"  # the body as sent, not parsed
    # The counts are in the state database once the pipe has stopped.
    async with await PipeStore.open(state_location) as store:
        saved = await store.get("orders-to-stream")
    assert saved is not None
    assert saved.counts["received"] == 4 and saved.counts["delivered"] == 2
    assert saved.current_state == "STOPPED" and saved.desired_state == "RUNNING"


async def _count(runtime: Runtime, stream: str, wanted: int) -> bool:
    return len(await stream_data(runtime, stream)) >= wanted


async def _empty(runtime: Runtime, queue: str) -> bool:
    return await queue_size(runtime, queue) == 0


async def test_target_template_with_paths_into_the_body_and_reserved_variables(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue}
  out: {type: queue}
pipes:
  p:
    source: orders
    target: out
    target_parameters:
      input_template: '{"order": <$.body.id>, "pipe": "<aws.pipes.pipe-name>", "note": "id <$.body.id>", "missing": <$.body.nothing>}'
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await send(runtime, "orders", [{"id": 7}])
        async with await QueueStore.open(runtime.state_path) as store:
            [message] = await store.receive("out", 1, wait_time=10)
    assert json.loads(message.body) == {
        "order": 7,
        "pipe": "p",
        "note": "id 7",
        "missing": None,
    }


async def test_a_function_target_gets_the_batch_and_its_item_failures_come_back(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue, visibility_timeout: 2}
  partial: {type: function, function: "tests.pipes_functions:partial"}
pipes:
  p:
    source: orders
    source_parameters: {batch_size: 10, maximum_batching_window_in_seconds: 1}
    target: partial
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        functions.fail_once.add(json.dumps({"n": 2}))  # before the pipe can take it
        async with await QueueStore.open(runtime.state_path) as store:
            await store.send_batch(
                "orders", [SendEntry(json.dumps({"n": n}), id=str(n)) for n in range(5)]
            )
        await until(lambda: _empty(runtime, "orders"))
        pipe = runtime.resource("p")
        assert isinstance(pipe, PipeTarget)
        assert pipe.counts["failed"] == 1 and pipe.counts["delivered"] == 5
    seen = [[json.loads(r["body"])["n"] for r in batch] for batch in batches("partial")]
    # All five in one batch (the window gathered them); the one that failed came again alone.
    assert seen == [[0, 1, 2, 3, 4], [2]]


async def test_invoke_as_an_event_source_mapping_hands_lambdas_records(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue, visibility_timeout: 2}
  handler: {type: function, function: "tests.pipes_functions:lambda_partial"}
pipes:
  p:
    source: orders
    source_parameters: {batch_size: 10, maximum_batching_window_in_seconds: 1}
    target: handler
    invoke_as: event_source_mapping
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        functions.fail_once.add(json.dumps({"n": 1}))  # before the pipe can take it
        async with await QueueStore.open(runtime.state_path) as store:
            sent, _ = await store.send_batch(
                "orders", [SendEntry(json.dumps({"n": n}), id=str(n)) for n in range(3)]
            )
        await until(lambda: _empty(runtime, "orders"))
    events = batches("lambda_partial")
    assert all(list(event) == ["Records"] for event in events), events
    first = events[0]["Records"][0]
    assert first["eventSource"] == "aws:sqs" and first["messageId"] == sent[0].message_id
    seen = [[json.loads(r["body"])["n"] for r in event["Records"]] for event in events]
    assert seen == [[0, 1, 2], [1]]  # its batchItemFailures still fail only that one


async def test_invoke_as_an_event_source_mapping_needs_a_function_target(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue}
  copy: {type: queue}
pipes:
  p:
    source: orders
    target: copy
    invoke_as: event_source_mapping
""",
    )
    problems = [str(problem) for problem in await check([path])]
    assert problems == [
        f"{path}:9:5: pipes.p.invoke_as: event_source_mapping is for a function target, not copy"
    ]


async def test_a_fifo_failure_holds_back_the_rest_of_its_group_only(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue, queue: orders.fifo, visibility_timeout: 1, content_based_deduplication: true}
  fifo: {type: function, function: "tests.pipes_functions:fail_fifo"}
pipes:
  p:
    source: orders
    source_parameters: {batch_size: 10}
    target: fifo
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        async with await QueueStore.open(runtime.state_path) as store:
            entries = [
                SendEntry(json.dumps({"g": "a", "n": 1, "fail": True}), id="0", group_id="a"),
                SendEntry(json.dumps({"g": "a", "n": 2}), id="1", group_id="a"),
                SendEntry(json.dumps({"g": "b", "n": 1}), id="2", group_id="b"),
            ]
            await store.send_batch("orders.fifo", entries)
        await until(lambda: asyncio.sleep(0, bool(batches("fail_fifo"))))
        await asyncio.sleep(0.2)
        # Group b is done; group a's two messages are both kept (in order).
        assert await queue_size(runtime, "orders.fifo") == 2
        pipe = runtime.resource("p")
        assert isinstance(pipe, PipeTarget)
        assert pipe.counts["failed"] == 2 and pipe.counts["delivered"] == 1


async def test_an_empty_enrichment_drops_and_a_malformed_one_fails_the_batch(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  a: {type: queue, visibility_timeout: 30}
  b: {type: queue, visibility_timeout: 30}
  nothing: {type: function, function: "tests.pipes_functions:enrich_nothing"}
  malformed: {type: function, function: "tests.pipes_functions:enrich_malformed"}
  collect: {type: function, function: "tests.pipes_functions:collect"}
pipes:
  drops: {source: a, enrichment: nothing, target: collect}
  fails: {source: b, enrichment: malformed, target: collect}
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await send(runtime, "a", [{"n": 1}])
        await send(runtime, "b", [{"n": 2}])
        await until(lambda: _empty(runtime, "a"))
        await until(lambda: asyncio.sleep(0, bool(batches("enrich_malformed"))))
        await asyncio.sleep(0.1)
        assert await queue_size(runtime, "b") == 1  # kept for a retry
        fails = runtime.resource("fails")
        assert isinstance(fails, PipeTarget)
        assert fails.counts["failed"] == 1 and fails.counts["delivered"] == 0
    assert batches("collect") == []


async def test_a_stream_partial_failure_is_retried_from_the_failed_record_in_order(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  clicks: {type: stream}
  partial: {type: function, function: "tests.pipes_functions:partial"}
pipes:
  p:
    source: clicks
    source_parameters: {starting_position: TRIM_HORIZON, batch_size: 10}
    filters:
      - {data: {n: [{numeric: [">=", 0]}]}}
    target: partial
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        async with await StreamStore.open(runtime.state_path) as store:
            await store.put_records(
                "clicks",
                [{"Data": json.dumps({"n": n}).encode(), "PartitionKey": "k"} for n in range(4)],
            )
            shard = (await store.describe_stream("clicks"))["Shards"][0]["ShardId"]
            records = await store.stream("clicks").records()
        functions.fail_once.add(f"{shard}:{records[2].sequence_number}")
        await until(lambda: asyncio.sleep(0, len(batches("partial")) >= 2))
        await asyncio.sleep(0.1)
    numbers = [
        [json.loads(base64.b64decode(r["data"]))["n"] for r in batch]
        for batch in batches("partial")
    ]
    assert numbers == [[0, 1, 2, 3], [2, 3]]
    [first] = batches("partial")[0][:1]
    assert first["eventSource"] == "aws:kinesis"
    assert first["partitionKey"] == "k"
    assert first["eventID"] == f"{shard}:{first['sequenceNumber']}"


async def test_stream_bisect_and_exhausted_retries_send_the_batch_to_the_dead_letter(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  clicks: {type: stream}
  poison: {type: function, function: "tests.pipes_functions:fail_by_data"}
  dlq: {type: queue}
pipes:
  p:
    source: clicks
    source_parameters:
      starting_position: TRIM_HORIZON
      batch_size: 4
      maximum_retry_attempts: 1
      on_partial_batch_item_failure: AUTOMATIC_BISECT
      dead_letter_config: {arn: "arn:aws:sqs:us-east-1:000000000000:dlq"}
    target: poison
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    kinds = ["ok", "ok", "poison", "ok"]
    async with runtime:
        await put_records(
            runtime, "clicks", [("k", {"kind": k, "n": n}) for n, k in enumerate(kinds)]
        )
        async with await QueueStore.open(runtime.state_path) as store:
            [dead] = await store.receive("dlq", 1, wait_time=15)
    info = json.loads(dead.body)
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["KinesisBatchInfo"]["batchSize"] == 1
    assert info["KinesisBatchInfo"]["streamArn"].endswith(":stream/clicks")
    delivered = [
        json.loads(base64.b64decode(r["data"]))["n"]
        for batch in batches("fail_by_data")
        if len(batch) == 1 or all(b"poison" not in base64.b64decode(r["data"]) for r in batch)
        for r in batch
    ]
    assert {0, 1, 3} <= set(delivered)
    # Halves: [0, 1] then [2, 3], then [2] and [3].
    sizes = [len(batch) for batch in batches("fail_by_data")]
    assert sizes[:3] == [4, 2, 2]


async def test_a_stopped_pipe_reads_nothing_until_started_and_its_state_survives(
    tmp_path: Path, state_location: str
) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue}
  collect: {type: function, function: "tests.pipes_functions:collect"}
pipes:
  p: {source: orders, target: collect, desired_state: STOPPED}
""",
    )
    runtime = await runtime_of(path, state_location)
    async with runtime:
        await send(runtime, "orders", [{"n": 1}])
        pipe = runtime.resource("p")
        assert isinstance(pipe, PipeTarget)
        assert pipe.current_state == "STOPPED"
        await asyncio.sleep(0.2)
        assert batches("collect") == []
        await pipe.set_desired("RUNNING")
        assert pipe.current_state == "RUNNING"
        await until(lambda: asyncio.sleep(0, bool(batches("collect"))))
    # StartPipe holds across a restart (the config still says STOPPED, as before).
    runtime = await runtime_of(path, state_location)
    async with runtime:
        pipe = runtime.resource("p")
        assert isinstance(pipe, PipeTarget)
        assert pipe.desired_state == "RUNNING" and pipe.current_state == "RUNNING"
        # The store is where the CLI sets it: the pipe reads it within a second.
        async with await PipeStore.open(state_location) as store:
            await store.set_desired("p", "STOPPED")
        await until(lambda: asyncio.sleep(0, pipe.current_state == "STOPPED"), 5)


async def test_a_source_of_the_wrong_kind_fails_the_pipe_not_the_runner(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
resources:
  collect: {type: function, function: "tests.pipes_functions:collect"}
  orders: {type: queue}
pipes:
  right: {source: orders, target: collect}
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        # A config with it is refused (the test above); put while running, past
        # that check, it fails alone.
        wrong = await runtime.put_resource(
            "wrong", "pipe", {"source": "collect", "target": "collect"}
        )
        right = runtime.resource("right")
        assert isinstance(wrong, PipeTarget) and isinstance(right, PipeTarget)
        assert wrong.current_state == "START_FAILED"
        assert "pipe wrong.source: collect is not a queue" in wrong.state_reason
        assert right.current_state == "RUNNING"


BAD = """
resources:
  orders: {type: queue}
  collect: {type: function, function: "tests.pipes_functions:collect"}
pipes:
  p:
    source: orders
    source_parameters:
      batch_size: 20000
      maximum_batching_window_in_seconds: 301
    filters: [{a: [1]}, {a: [2]}, {a: [3]}, {a: [4]}, {a: [5]}, {a: [6]}]
    target: nowhere
  q:
    source: orders
    filters: [{a: "not a list"}]
    target: collect
    target_parameters: {input_template: "<aws.pipes.nothing>"}
"""


async def test_bad_pipes_are_located_config_errors(tmp_path: Path) -> None:
    path = config(tmp_path, BAD)
    problems = [str(problem) for problem in await check([path])]
    file = str(path)
    expected = [
        f"{file}:9:7: pipes.p.source_parameters.batch_size: must be between 1 and 10000",
        f"{file}:10:7: pipes.p.source_parameters.maximum_batching_window_in_seconds:"
        " must be between 0 and 300",
        f"{file}:11:5: pipes.p.filters: has 6 patterns; a pipe takes at most 5",
        f"{file}:15:15: pipes.q.filters[0]: Event pattern is not valid.",
        f"{file}:17:25: pipes.q.target_parameters.input_template: <aws.pipes.nothing>"
        " is no reserved variable",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)
    # The unknown target is reported once the pipe's other problems are fixed.
    fixed = BAD.replace("20000", "20").replace("301", "3").replace(", {a: [6]}", "")
    problems = [str(p) for p in await check([config(tmp_path, fixed.split("  q:")[0])])]
    assert any(
        p.startswith(f"{file}:12:5: pipes.p.target: no resource named 'nowhere'") for p in problems
    ), problems


async def test_what_a_pipe_asks_of_the_resources_it_names_is_checked_before_a_run(
    tmp_path: Path,
) -> None:
    # What a starting pipe would refuse (START_FAILED) is found by validate too.
    path = config(
        tmp_path,
        """
resources:
  fn: {type: function, function: "tests.pipes_functions:enrich"}
  orders: {type: queue}
  shipped: {type: stream}
  events: {type: stream}
pipes:
  from-a-function:
    source: fn
    target: orders
  wide-without-window:
    source: orders
    source_parameters: {batch_size: 50}
    target: fn
  no-position:
    source: events
    target: fn
  over-the-target:
    source: events
    source_parameters: {batch_size: 600, starting_position: LATEST}
    target: shipped
""",
    )
    problems = {str(problem) for problem in await check([path])}
    file = str(path)
    assert problems == {
        f"{file}:9:5: pipes.from-a-function.source: fn is not a queue, a stream, a log"
        " group, an MQTT connection or a webhook: a pipe reads one of those",
        f"{file}:13:5: pipes.wide-without-window.source_parameters: a queue source's"
        " batch_size above 10 needs maximum_batching_window_in_seconds of at least 1 (as AWS)",
        f"{file}:15:3: pipes.no-position.source_parameters.starting_position: a stream source"
        " needs one: TRIM_HORIZON, LATEST or AT_TIMESTAMP",
        f"{file}:20:25: pipes.over-the-target.source_parameters.batch_size: is 600; the target"
        " shipped takes batches of at most 500",
    }


async def test_a_pipe_named_as_a_resource_is_refused(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue}
pipes:
  orders: {source: orders, target: orders}
""",
    )
    [problem] = await check([path])
    assert str(problem).startswith(f"{path}:5:3: pipes.orders: a resource of this name")


async def test_the_store_keeps_definitions_states_and_counts(state_location: str) -> None:
    async with await PipeStore.open(state_location) as store:
        assert await store.declare("p", {"source": "q", "target": "t"}, "RUNNING") == "RUNNING"
        assert await store.set_desired("p", "STOPPED")
        # The config says RUNNING as before: StopPipe holds.
        assert await store.declare("p", {"source": "q", "target": "t"}, "RUNNING") == "STOPPED"
        # The config changed to STOPPED and back: the config's word applies again.
        assert await store.declare("p", {"source": "q", "target": "t"}, "STOPPED") == "STOPPED"
        assert await store.declare("p", {"source": "q", "target": "t"}, "RUNNING") == "RUNNING"
        await store.add_counts("p", {"received": 3, "delivered": 2, "failed": 1})
        await store.add_counts("p", {"received": 1, "filtered": 1})
        await store.put("api-made", "api", {"source": "s", "target": "t"}, "STOPPED")
        await store.set_current("p", "RUNNING")
        assert not await store.set_desired("absent", "RUNNING")
    async with await PipeStore.open(state_location) as store:
        p = await store.get("p")
        assert p is not None
        assert p.counts == {
            "received": 4,
            "filtered": 1,
            "enriched": 0,
            "delivered": 2,
            "failed": 1,
        }
        assert p.current_state == "RUNNING" and p.origin == "config"
        assert [r.name for r in await store.made_by_api()] == ["api-made"]
        assert await store.delete("api-made")
        assert [r.name for r in await store.pipes()] == ["p"]


ENRICH_MACHINE = {
    "QueryLanguage": "JSONata",
    "StartAt": "Tag",
    "States": {
        "Tag": {
            "Type": "Pass",
            "Output": "{% $map($states.input, function($r) { {'id': $parse($r.body).id, 'checked': true} }) %}",
            "End": True,
        }
    },
}


async def test_an_express_state_machine_enriches_and_a_bus_is_the_target(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        f"""
buses: [orders]
resources:
  orders: {{type: queue}}
  tagger: {{type: state_machine, state_machine_type: EXPRESS, definition: {json.dumps(ENRICH_MACHINE)}}}
  collect: {{type: function, function: "tests.pipes_functions:collect"}}
rules:
  checked:
    bus: orders
    pattern: {{source: [shop.pipe]}}
    targets: [{{id: c, resource: collect}}]
pipes:
  p:
    source: orders
    enrichment: tagger
    target: bus:orders
    target_parameters: {{source: shop.pipe, detail_type: Checked}}
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await send(runtime, "orders", [{"id": 1}, {"id": 2}])
        await until(lambda: asyncio.sleep(0, len(batches("collect")) == 2))
    events = sorted(batches("collect"), key=lambda event: event["detail"]["id"])
    assert [event["detail"] for event in events] == [
        {"id": 1, "checked": True},
        {"id": 2, "checked": True},
    ]
    assert events[0]["source"] == "shop.pipe"
    assert events[0]["detail-type"] == "Checked"
    assert events[0]["resources"] == ["arn:aws:pipes:us-east-1:000000000000:pipe/p"]


async def test_a_standard_machine_is_no_enrichment_and_errors_reach_the_log_group(
    tmp_path: Path,
) -> None:
    machine = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    path = config(
        tmp_path,
        f"""
resources:
  orders: {{type: queue, visibility_timeout: 30}}
  standard: {{type: state_machine, definition: {machine}}}
  collect: {{type: function, function: "tests.pipes_functions:collect"}}
  pipe-logs: {{type: log_group}}
pipes:
  p:
    source: orders
    enrichment: standard
    target: collect
    log_configuration: {{level: ERROR, log_group: pipe-logs}}
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await send(runtime, "orders", [{"id": 1}])
        pipe = runtime.resource("p")
        assert isinstance(pipe, PipeTarget)
        await until(lambda: asyncio.sleep(0, pipe.counts["failed"] == 1))
    from plugins.logs.store import LogStore

    async with await LogStore.open(runtime.state_path) as store:
        found = await store.filter_log_events("pipe-logs")
    [record] = [json.loads(event["message"]) for event in found["events"]]
    assert record["messageType"] == "ExecutionFailed"
    assert record["logLevel"] == "ERROR" and record["stage"] == "Enrichment"
    assert "STANDARD" in record["error"]
    assert batches("collect") == []


LOGS = """
resources:
  app-logs: {type: log_group}
  collect: {type: function, function: "tests.pipes_functions:collect"}
rules:
  to-logs:
    pattern: {source: [app]}
    targets: [{id: logs, resource: app-logs, input_path: $.detail}]
pipes:
  errors:
    source: app-logs
    filters: [{message: {level: [error]}}]
    target: collect
"""


async def test_a_log_group_is_a_source_and_its_place_survives_a_restart(
    tmp_path: Path, state_location: str
) -> None:
    path = config(tmp_path, LOGS)

    def entry(n: int, level: str) -> dict[str, Any]:
        return {
            "Source": "app",
            "DetailType": "line",
            "Detail": json.dumps({"n": n, "level": level}),
        }

    def seen() -> list[int]:
        return [json.loads(r["message"])["n"] for batch in batches("collect") for r in batch]

    runtime = await runtime_of(path, state_location)
    async with runtime:
        await runtime.put_events([entry(1, "error"), entry(2, "info"), entry(3, "error")])
        await until(lambda: asyncio.sleep(0, len(seen()) == 2))
        [record] = batches("collect")[0][:1]
        assert record["eventSource"] == "aws:logs" and record["logGroup"] == "app-logs"
        pipe = runtime.resource("errors")
        assert isinstance(pipe, PipeTarget)
        await pipe.set_desired("STOPPED")
        await runtime.put_events([entry(4, "error")])
        await runtime.wait_until_idle()
        await asyncio.sleep(0.3)
        assert seen() == [1, 3]  # stopped: read nothing
    runtime = await runtime_of(path, state_location)
    async with runtime:
        await runtime.put_events([entry(5, "error")])
        await runtime.resource("errors").set_desired("RUNNING")  # type: ignore[attr-defined]
        await until(lambda: asyncio.sleep(0, len(seen()) == 4))
        await asyncio.sleep(0.3)
    assert seen() == [1, 3, 4, 5]  # from its place: none lost, none twice


async def stop_while_held(runtime: Runtime, name: str, seen: Callable[[], list[int]]) -> None:
    """Pipe ``name``'s target (``pipes_functions:held``) holds the batch
    ``[1]`` while the pipe is told to stop: the stop waits, in STOPPING, for
    that delivery, and ends once the target answers."""
    await until(lambda: asyncio.sleep(0, seen() == [1]))  # the target holds it
    pipe = runtime.resource(name)
    assert isinstance(pipe, PipeTarget)
    stopping = asyncio.create_task(pipe.set_desired("STOPPED"))
    await until(lambda: asyncio.sleep(0, pipe.current_state in ("STOPPING", "STOPPED")))
    # The stop waits for the delivery under way.
    assert pipe.current_state == "STOPPING" and not stopping.done()
    assert functions.gate is not None
    functions.gate.set()
    await stopping
    assert pipe.current_state == "STOPPED"


async def started_until(runtime: Runtime, name: str, seen: Callable[[], list[int]]) -> None:
    """Pipe ``name`` started again, until it delivered a second record and a
    moment more (time to deliver one twice, were it possible)."""
    await runtime.resource(name).set_desired("RUNNING")  # type: ignore[attr-defined]
    await until(lambda: asyncio.sleep(0, len(seen()) >= 2))
    await asyncio.sleep(0.3)


async def test_a_stop_during_a_delivery_lets_it_finish_and_keeps_its_place(
    tmp_path: Path, state_location: str
) -> None:
    path = config(tmp_path, LOGS.replace("pipes_functions:collect", "pipes_functions:held"))
    functions.gate = asyncio.Event()

    def entry(n: int) -> dict[str, Any]:
        return {
            "Source": "app",
            "DetailType": "line",
            "Detail": json.dumps({"n": n, "level": "error"}),
        }

    def seen() -> list[int]:
        return [json.loads(r["message"])["n"] for batch in batches("held") for r in batch]

    runtime = await runtime_of(path, state_location)
    async with runtime:
        await runtime.put_events([entry(1)])
        await stop_while_held(runtime, "errors", seen)
    runtime = await runtime_of(path, state_location)
    async with runtime:
        await runtime.put_events([entry(2)])
        await started_until(runtime, "errors", seen)
    assert seen() == [1, 2]  # the delivered event's place was kept: not again


async def test_a_stop_during_a_stream_batch_lets_it_finish_and_keeps_its_place(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  clicks: {type: stream}
  held: {type: function, function: "tests.pipes_functions:held"}
pipes:
  p:
    source: clicks
    source_parameters: {starting_position: TRIM_HORIZON, batch_size: 10}
    target: held
""",
    )
    functions.gate = asyncio.Event()

    def seen() -> list[int]:
        return [json.loads(base64.b64decode(r["data"]))["n"] for b in batches("held") for r in b]

    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await put_records(runtime, "clicks", [("k", {"n": 1})])
        await stop_while_held(runtime, "p", seen)
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await put_records(runtime, "clicks", [("k", {"n": 2})])
        await started_until(runtime, "p", seen)
    assert seen() == [1, 2]  # the delivered batch's place was kept: not again


async def test_a_stop_during_a_queue_batch_lets_it_finish_and_deletes_it(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue, visibility_timeout: 1}
  held: {type: function, function: "tests.pipes_functions:held"}
pipes:
  p: {source: orders, target: held}
""",
    )
    functions.gate = asyncio.Event()

    def seen() -> list[int]:
        return [json.loads(r["body"])["n"] for b in batches("held") for r in b]

    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await send(runtime, "orders", [{"n": 1}])
        await stop_while_held(runtime, "p", seen)
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await asyncio.sleep(1.2)  # past the visibility timeout: a kept message is back
        await send(runtime, "orders", [{"n": 2}])
        await started_until(runtime, "p", seen)
    assert seen() == [1, 2]  # the delivered message was deleted: not again


async def test_an_api_destination_enriches_record_by_record(tmp_path: Path) -> None:
    from .httpserver import Answer, ScriptedServer

    server = await ScriptedServer().start()
    server.script("/enrich", [Answer(body='{"tier": "gold"}'), Answer(body="not json")])
    try:
        path = config(
            tmp_path,
            f"""
resources:
  orders: {{type: queue, visibility_timeout: 30}}
  lookup:
    type: api_destination
    endpoint: {server.url}/enrich
    connection: {{authorization_type: API_KEY, api_key: {{name: k, value: v}}}}
  collect: {{type: function, function: "tests.pipes_functions:collect"}}
pipes:
  p:
    source: orders
    source_parameters: {{batch_size: 1}}
    enrichment: lookup
    enrichment_parameters: {{input_template: '{{"order": <$.body.id>}}'}}
    target: collect
""",
        )
        runtime = await runtime_of(path, str(tmp_path / "state.db"))
        async with runtime:
            await send(runtime, "orders", [{"id": 1}])
            await until(lambda: asyncio.sleep(0, bool(batches("collect"))))
            await send(runtime, "orders", [{"id": 2}])
            pipe = runtime.resource("p")
            assert isinstance(pipe, PipeTarget)
            await until(lambda: asyncio.sleep(0, pipe.counts["failed"] == 1))
    finally:
        await server.close()
    assert [seen.json() for seen in server.requests] == [{"order": 1}, {"order": 2}]
    assert batches("collect") == [[{"tier": "gold"}]]


async def test_a_batch_larger_than_the_target_takes_is_refused_and_so_is_too_much_enrichment(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  clicks: {type: stream}
  orders: {type: queue, visibility_timeout: 30}
  out: {type: queue}
  fan: {type: function, function: "tests.pipes_functions:fan_out"}
pipes:
  fans:
    source: orders
    source_parameters: {batch_size: 2}
    enrichment: fan
    target: out
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        # (In a config, refused before the run: test_what_a_pipe_asks_of_...)
        wide = await runtime.put_resource(
            "wide",
            "pipe",
            {
                "source": "clicks",
                "source_parameters": {"starting_position": "LATEST", "batch_size": 100},
                "target": "out",
            },
        )
        fans = runtime.resource("fans")
        assert isinstance(wide, PipeTarget) and isinstance(fans, PipeTarget)
        assert wide.current_state == "START_FAILED"
        assert wide.state_reason == (
            "pipe wide.source_parameters.batch_size: is 100; the target out takes batches"
            " of at most 10"
        )
        await send(runtime, "orders", [{"n": 1}])
        await until(lambda: asyncio.sleep(0, fans.counts["failed"] == 1))
        assert await queue_size(runtime, "out") == 0  # AWS does not invoke the target


async def test_a_reload_replaces_a_changed_pipe_and_it_goes_on_from_its_place(
    tmp_path: Path,
) -> None:
    from pipelines.reload import reload

    text = """
resources:
  clicks: {type: stream}
  collect: {type: function, function: "tests.pipes_functions:collect"}
pipes:
  p:
    source: clicks
    source_parameters: {starting_position: TRIM_HORIZON}
    filters: [{data: {kind: [FILTER]}}]
    target: collect
"""
    path = config(tmp_path, text.replace("FILTER", "a"))
    current = load_config(path)
    runtime = await build_runtime(current, state_path=tmp_path / "state.db", plugins=manager())

    def kinds() -> list[str]:
        return [
            json.loads(base64.b64decode(r["data"]))["kind"]
            for batch in batches("collect")
            for r in batch
        ]

    async with runtime:
        await put_records(runtime, "clicks", [("k", {"kind": "a"}), ("k", {"kind": "b"})])
        await until(lambda: asyncio.sleep(0, kinds() == ["a"]))
        new = load_config(config(tmp_path, text.replace("FILTER", "b")))
        await reload(runtime, current, new)
        await put_records(runtime, "clicks", [("k", {"kind": "a"}), ("k", {"kind": "b"})])
        await until(lambda: asyncio.sleep(0, kinds() == ["a", "b"]))
        await asyncio.sleep(0.3)
    # The checkpoint held across the swap: the first b (filtered out before) is not read again.
    assert kinds() == ["a", "b"]


async def test_failed_messages_go_to_the_queues_own_dead_letter_queue_and_metrics_count(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders:
    type: queue
    visibility_timeout: 1
    redrive_policy: {dead_letter_queue: orders-dlq, max_receive_count: 2}
  orders-dlq: {type: queue}
  partial: {type: function, function: "tests.pipes_functions:partial"}
pipes:
  p: {source: orders, target: partial}
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        # Marked before it is sent: the running pipe may take it at once.
        functions.fail_always.add(json.dumps({"n": 0}))
        async with await QueueStore.open(runtime.state_path) as store:
            await store.send_batch(
                "orders", [SendEntry(json.dumps({"n": n}), id=str(n)) for n in range(2)]
            )
        async with await QueueStore.open(runtime.state_path) as store:
            [dead] = await store.receive("orders-dlq", 1, wait_time=20)
        assert json.loads(dead.body) == {"n": 0}
        pipe = runtime.resource("p")
        assert isinstance(pipe, PipeTarget)
        assert pipe.counts["delivered"] == 1 and pipe.counts["failed"] == 2  # received twice
        pipe.metrics.flush(runtime, "p")
        await runtime.metrics.flush()
        now = runtime.clock.time()
        found = await runtime.metrics.get_metric_statistics(
            "Pipelines/Pipes",
            "ExecutionPartiallyFailed",
            {"PipeName": "p"},
            start=now - 600,
            end=now + 60,
            period=60,
            statistics=["Sum"],
        )
    assert sum(point["Sum"] for point in found["Datapoints"]) == 2


async def test_a_fifo_queue_target_gets_the_message_group_the_template_gives(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """
resources:
  orders: {type: queue}
  by-customer: {type: queue, queue: by-customer.fifo}
pipes:
  p:
    source: orders
    target: by-customer
    target_parameters: {message_group_id: "<$.body.customer>"}
""",
    )
    runtime = await runtime_of(path, str(tmp_path / "state.db"))
    async with runtime:
        await send(runtime, "orders", [{"customer": "ann", "n": 1}])
        async with await QueueStore.open(runtime.state_path) as store:
            [message] = await store.receive("by-customer.fifo", 1, wait_time=10)
    assert message.attributes["MessageGroupId"] == "ann"
    assert json.loads(json.loads(message.body)["body"]) == {"customer": "ann", "n": 1}
