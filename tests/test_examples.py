"""The runnable examples, run as a user runs them: a real subprocess."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .helpers import pipelines_command, run_cli

try:  # Parquet is the optional `parquet` extra
    import pyarrow.parquet as parquet
except ImportError:  # pragma: no cover - without the extra
    parquet = None
from .mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def test_orders_pipeline_routes_retries_and_dead_letters() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "orders" / "pipeline.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    put = report["put_events"]
    assert put["FailedEntryCount"] == 1
    assert put["Entries"][3] == {
        "ErrorCode": "MalformedDetail",
        "ErrorMessage": "Detail is malformed.",
    }
    ids = [entry["EventId"] for entry in put["Entries"][:3]]

    assert [order["order"] for order in report["audited"]] == ["o-1", "o-2", "o-3"]
    assert report["shipped"] == [
        {"ship": "o-1", "value": 250, "why": "ship-large"},
        {"ship": "o-3", "value": 120, "why": "ship-large"},
    ]
    # o-3 failed once and got through on the retry; o-2 is declined every time.
    assert report["charged"] == ["o-1", "o-3"]
    assert report["charge_attempts"] == {"o-1": 1, "o-2": 3, "o-3": 2}
    assert report["dead_letters"] == [
        {
            "event_id": ids[1],
            "RULE_NAME": "charge-all",
            "TARGET_ID": "charge",
            "ERROR_CODE": "FunctionError",
            "ERROR_MESSAGE": "ValueError: card declined for order o-2",
            "RETRY_ATTEMPTS": "2",
            "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
        }
    ]
    metrics = report["metrics"]
    assert metrics["InvocationAttempts charge-all"] == 6
    assert metrics["RetryInvocationAttempts charge-all"] == 3
    assert metrics["InvocationsSentToDlq charge-all"] == 1
    assert metrics["Events (bus)"] == 3


def test_orders_yaml_pipeline_runs_from_the_cli(tmp_path: Path) -> None:
    orders = ROOT / "examples" / "orders"
    done = subprocess.run(
        [
            *pipelines_command(),
            "run",
            str(orders / "pipeline.yaml"),
            "--input",
            str(orders / "events.jsonl"),
        ],
        env={**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    by_step: dict[str, list[dict[str, object]]] = {}
    for step in steps:
        by_step.setdefault(str(step.pop("step")), []).append(step)
    assert sorted(str(a["order"]) for a in by_step["audit"]) == ["o-1", "o-2", "o-3"]
    assert sorted(str(s["ship"]) for s in by_step["ship"]) == ["o-1", "o-3"]
    # o-3's first attempt met an outage; the retry went through. o-2 was declined.
    assert sorted((c["order"], c["attempt"]) for c in by_step["charge"]) == [
        ("o-1", 1),
        ("o-3", 2),
    ]
    assert "failed-charge" not in by_step  # dead letters go to a queue
    dead = subprocess.run(
        [*pipelines_command(), "queue", "receive", "failed-charges", "-n", "10", "--delete"],
        cwd=orders,
        env={**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dead.returncode == 0, dead.stderr
    (failed,) = json.loads(dead.stdout)
    assert json.loads(failed["Body"])["detail"]["order"] == "o-2"
    attributes = {k: v["StringValue"] for k, v in failed["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "CardDeclined"
    assert attributes["RETRY_ATTEMPTS"] == "0"
    assert attributes["RULE_NAME"] == "charge-all"


def test_fanout_pipeline_filters_per_subscription_and_redrives(tmp_path: Path) -> None:
    fanout = ROOT / "examples" / "fanout"
    config = str(fanout / "pipeline.yaml")
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")}

    def pipelines(*args: str) -> Any:
        """What the command printed: one JSON document (--output json)."""
        done = run_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    ran = run_cli("run", config, "--input", str(fanout / "events.jsonl"), env=env)
    assert ran.returncode == 0, ran.stderr

    def bodies(queue: str, *options: str) -> list[dict[str, Any]]:
        return pipelines("queue", "receive", queue, "-c", config, "-n", "10", *options)

    big = bodies("big-orders", "--visibility-timeout", "0")
    # raw delivery: the body is the order event; its attributes travel along
    assert sorted(json.loads(str(m["Body"]))["detail"]["order"] for m in big) == ["o-1", "o-3"]
    assert {m["MessageAttributes"]["country"]["StringValue"] for m in big} == {"DE", "US"}
    envelopes = [json.loads(str(m["Body"])) for m in bodies("eu-orders", "--delete")]
    assert {e["Type"] for e in envelopes} == {"Notification"}
    assert all(e["TopicArn"].endswith(":orders") for e in envelopes)
    orders = sorted(json.loads(e["Message"])["detail"]["order"] for e in envelopes)
    assert orders == ["o-1", "o-4"]  # shipped to DE and FR
    [refund] = bodies("refunds", "--delete")
    assert json.loads(json.loads(str(refund["Body"]))["Message"])["detail-type"] == "OrderRefunded"

    # A consumer that never deletes: after three receives the messages move to the DLQ.
    bodies("big-orders", "--visibility-timeout", "0")
    bodies("big-orders", "--visibility-timeout", "0")
    assert bodies("big-orders") == []
    stats = pipelines("queue", "stats", "big-orders-dlq", "-c", config)
    assert stats["ApproximateNumberOfMessages"] == 2
    assert pipelines("queue", "redrive", "big-orders-dlq", "-c", config) == {
        "QueueName": "big-orders-dlq",
        "Moved": 2,
    }
    assert len(bodies("big-orders", "--delete")) == 2

    # Publishing through the topic from the command line, the pipeline stopped.
    published = pipelines(
        "topic", "publish", "orders", '{"order": "o-9"}', "-a", "total=500", "-c", config
    )
    assert published["Subscriptions"] == ["big"]
    [direct] = bodies("big-orders", "--delete")
    assert json.loads(str(direct["Body"])) == {"order": "o-9"}


def test_audit_pipeline_archives_and_a_cli_replay_delivers_again(tmp_path: Path) -> None:
    audit = ROOT / "examples" / "audit"
    config = str(audit / "pipeline.yaml")
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")}

    def pipelines(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env)

    runner = subprocess.Popen(
        [*pipelines_command(), "run", config], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "control socket" in runner.stderr.readline()
        put = pipelines("put", "-c", config, "--input", str(audit / "events.jsonl"))
        assert put.returncode == 0, put.stderr

        listed = pipelines("archive", "list", "-c", config)
        [archive] = json.loads(listed.stdout)
        assert (archive["ArchiveName"], archive["EventCount"]) == ("shop", 3)  # not the crm event

        replay = pipelines(
            "replay", "start", "billing-fix", "--archive", "shop", "--rule", "billing", "-c", config
        )
        assert replay.returncode == 0, replay.stderr
        final = json.loads(replay.stdout)
        assert (final["State"], final["EventsReplayed"], final["EventsTotal"]) == (
            "COMPLETED",
            3,
            3,
        )
        assert "replay billing-fix: COMPLETED 3/3 events" in replay.stderr  # not a terminal

        received = pipelines("queue", "receive", "billing", "-c", config, "-n", "10", "--delete")
        bodies = [json.loads(message["Body"]) for message in json.loads(received.stdout)]
        orders = sorted((b["detail"]["order"], b.get("replay-name", "-")) for b in bodies)
        assert orders == [
            ("o-1", "-"),
            ("o-1", "billing-fix"),
            ("o-2", "-"),
            ("o-2", "billing-fix"),
        ]
        shipped = pipelines("queue", "receive", "shipping", "-c", config, "-n", "10", "--delete")
        assert len(json.loads(shipped.stdout)) == 2  # shipping was not named: no replay

        # On a terminal, a progress bar (on stderr; the result stays on stdout).
        primary, secondary = pty.openpty()
        with_bar = subprocess.run(
            [*pipelines_command(), "replay", "start", "again", "-a", "shop", "-c", config],
            env={**env, "COLUMNS": "80"},
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(secondary)
        bar = os.read(primary, 65536).decode()
        os.close(primary)
        assert with_bar.returncode == 0
        assert json.loads(with_bar.stdout)["State"] == "COMPLETED"
        assert "3/3" in bar and "━" in bar

        again = pipelines("archive", "describe", "shop", "-c", config)
        assert json.loads(again.stdout)["EventCount"] == 3  # replays are not archived again
        cancel = pipelines("replay", "cancel", "billing-fix", "-c", config)
        assert cancel.returncode == 1
        assert "IllegalStatusException" in cancel.stderr
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    assert runner.returncode == 0
    status = pipelines("replay", "status", "billing-fix", "-c", config)
    assert json.loads(status.stdout)["State"] == "COMPLETED"  # read with the pipeline stopped


def test_alarms_pipeline_from_the_cli(tmp_path: Path) -> None:
    alarms = ROOT / "examples" / "alarms"
    config = str(alarms / "pipeline.yaml")
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")}

    def pipelines(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        return done

    # --input runs until delivered; at exit the store writes the last counts.
    pipelines("run", config, "--input", str(alarms / "events.jsonl"))
    got = pipelines(
        "metrics", "get", "Pipelines/Events", "FailedInvocations", "--stat", "Sum",
        "-d", "EventBusName=default", "-d", "RuleName=charge", "-c", config,
    )  # fmt: skip
    points = json.loads(got.stdout)["Datapoints"]
    assert sum(p["Sum"] for p in points) == 1  # card 4000000000000000 was declined
    [alarm] = json.loads(pipelines("alarms", "list", "-c", config).stdout)
    assert alarm["AlarmName"] == "payments-failing"
    assert alarm["MetricName"] == "FailedInvocations"

    runner = subprocess.Popen(
        [*pipelines_command(), "run", config], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "control socket" in runner.stderr.readline()
        # set-state tries the route without waiting for a minute to end.
        before = alarm["StateValue"]
        wanted = "OK" if before == "ALARM" else "ALARM"
        forced = pipelines(
            "alarms", "set-state", "payments-failing", "--state-value", wanted,
            "--reason", "trying the pager", "-c", config,
        )  # fmt: skip
        assert json.loads(forced.stdout)["StateValue"] == wanted
        history = pipelines("alarms", "history", "payments-failing", "-c", config)
        newest = json.loads(history.stdout)[0]
        assert f"Alarm updated from {before} to {wanted}" in newest["HistorySummary"]
        if wanted == "ALARM":
            received = pipelines("queue", "receive", "pages", "-c", config, "-n", "10")
            pages = [json.loads(message["Body"]) for message in json.loads(received.stdout)]
            assert {
                "alarm": "payments-failing",
                "state": "ALARM",
                "reason": "trying the pager",
            } in pages
            # A minute that ends meanwhile evaluates the declined card for real:
            # that may page too, but only as this alarm going to ALARM.
            assert len(pages) <= 2
            assert all((p["alarm"], p["state"]) == ("payments-failing", "ALARM") for p in pages)
        refused = run_cli(
            "alarms",
            "set-state",
            "nope",
            "--state-value",
            "OK",
            "--reason",
            "x",
            "-c",
            config,
            env=env,
        )
        assert refused.returncode == 1 and "no alarm named 'nope'" in refused.stderr
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    assert runner.returncode == 0
    # Read with the pipeline stopped: the state is the newest history entry's.
    described = json.loads(pipelines("alarms", "describe", "payments-failing", "-c", config).stdout)
    newest = json.loads(pipelines("alarms", "history", "-c", config).stdout)[0]
    new_state = json.loads(newest["HistoryData"])["newState"]
    assert (described["StateValue"], described["StateReason"]) == (
        new_state["stateValue"],
        new_state["stateReason"],
    )


def test_iot_pipeline_alerts_devices_over_mqtt(mosquitto: Mosquitto, tmp_path: Path) -> None:
    iot = ROOT / "examples" / "iot"
    config = str(iot / "pipeline.yaml")
    env = {
        **os.environ,
        "PIPELINES_STATE": str(tmp_path / "state.db"),
        "MQTT_PORT": str(mosquitto.port),
    }
    assert run_cli("validate", config, env=env).returncode == 0
    assert run_cli("test", str(iot), env=env).returncode == 0
    runner = subprocess.Popen(
        [*pipelines_command(), "run", config], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "pipeline started" in runner.stderr.readline()
        alerts = mosquitto.sub("devices/+/alerts", 1)
        mosquitto.pub(
            "sensors/boiler-1/telemetry",
            json.dumps({"device": "boiler-1", "temperature": 60}),
            json.dumps({"device": "boiler-1", "temperature": 91.5}),
        )
        out, _ = alerts.communicate(timeout=30)
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    assert runner.returncode == 0
    topic, payload = out.strip().split(" ", 1)
    assert topic == "devices/boiler-1/alerts"
    alert = json.loads(payload)
    assert alert["alert"] == "overheating" and alert["temperature"] == 91.5


def test_clickstream_pipeline_fans_into_a_stream_read_by_a_fast_and_a_slow_consumer(
    tmp_path: Path,
) -> None:
    clickstream = ROOT / "examples" / "clickstream"
    config = str(clickstream / "pipeline.yaml")
    out = tmp_path / "out"
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db"), "CLICKSTREAM_OUT": str(out)}
    assert run_cli("validate", config, env=env).returncode == 0
    # Config tests run the pipeline for real (on a state database of their own):
    # their consumers write elsewhere.
    tested = run_cli("test", str(clickstream), env={**env, "CLICKSTREAM_OUT": str(tmp_path / "t")})
    assert tested.returncode == 0
    views = [json.loads(json.loads(line)["Detail"]) for line in
             (clickstream / "events.jsonl").read_text().splitlines()]  # fmt: skip

    def consumed(consumer: str) -> list[dict[str, object]]:
        path = out / f"{consumer}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_for(check: Callable[[], bool], seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.05)

    def run() -> subprocess.Popen[str]:
        runner = subprocess.Popen(
            [*pipelines_command(), "run", config], env=env, stderr=subprocess.PIPE, text=True
        )
        assert runner.stderr is not None
        assert "pipeline started" in runner.stderr.readline()
        return runner

    def stop(runner: subprocess.Popen[str]) -> None:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
        assert runner.returncode == 0

    runner = run()
    try:
        put = run_cli("put", "-c", config, "--input", str(clickstream / "events.jsonl"), env=env)
        assert put.returncode == 0, put.stderr
        wait_for(lambda: len(consumed("dashboard")) == len(views))
        # The slow one is behind when the fast one is done; stop it part way.
        behind = len(consumed("warehouse"))
        assert behind < len(views)
        wait_for(lambda: len(consumed("warehouse")) >= min(behind + 30, len(views) - 1))
    finally:
        stop(runner)
    stopped_at = len(consumed("warehouse"))

    # The stream keeps every view in order per user (its shard is the MD5 of
    # the user): each consumer saw each user's views in that order.
    read = run_cli("stream", "read", "clicks", "-c", config, "--from", "trim-horizon", env=env)
    assert read.returncode == 0, read.stderr
    stored = [json.loads(line) for line in read.stdout.splitlines()]
    assert sorted(r["Data"]["n"] for r in stored) == sorted(v["n"] for v in views)
    assert all(r["PartitionKey"] == r["Data"]["user"] for r in stored)

    def per_user(items: list[dict[str, object]]) -> dict[object, list[object]]:
        found: dict[object, list[object]] = {}
        for item in items:
            found.setdefault(item["user"], []).append(item["n"])
        return found

    assert per_user(consumed("dashboard")) == per_user([r["Data"] for r in stored])

    # Started again, the slow consumer goes on from its checkpoint: nothing
    # lost, at most its last batch (10) seen twice.
    runner = run()
    try:
        wait_for(lambda: {v["n"] for v in consumed("warehouse")} == {v["n"] for v in views})
    finally:
        stop(runner)
    warehouse = consumed("warehouse")
    assert len(warehouse) - len(views) <= 10 and stopped_at < len(views)
    unique = list({(v["user"], v["n"]): v for v in warehouse}.values())
    assert per_user(unique) == per_user([r["Data"] for r in stored])
    assert len(consumed("dashboard")) == len(views)  # read once, not again after the restart
    checkpoints = run_cli("stream", "checkpoints", "clicks", "warehouse", "-c", config, env=env)
    assert checkpoints.returncode == 0, checkpoints.stderr
    assert len(json.loads(checkpoints.stdout)) == 4  # one per shard


def test_failures_pipeline_logs_failed_deliveries_and_counts_them(tmp_path: Path) -> None:
    failures = ROOT / "examples" / "failures"
    config = str(failures / "pipeline.yaml")
    group = "/pipelines/failed-deliveries"
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")}

    def pipelines(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        return done

    assert run_cli("test", str(failures), env=env).returncode == 0
    # --input runs until delivered: 7 of the 10 orders cannot be charged.
    pipelines("run", config, "--input", str(failures / "events.jsonl"))
    tailed = pipelines("logs", "tail", group, "-c", config)
    logged = [json.loads(json.loads(line)["message"]) for line in tailed.stdout.splitlines()]
    assert sorted(e["payload"]["detail"]["order"] for e in logged) == [
        "o-10", "o-2", "o-3", "o-4", "o-6", "o-7", "o-8",
    ]  # fmt: skip
    assert {e["attributes"]["RULE_NAME"] for e in logged} == {"charge"}
    declined = pipelines(
        "logs", "tail", group, "-c", config,
        "--filter", '{ $.attributes.ERROR_CODE = "CardDeclined" }',
    )  # fmt: skip
    assert len(declined.stdout.splitlines()) == 4
    table = pipelines(
        "logs", "query", group, "stats count() as n by attributes.ERROR_CODE | sort n desc",
        "-c", config,
    )  # fmt: skip
    rows = json.loads(table.stdout)["rows"]
    assert [(r["attributes.ERROR_CODE"], int(r["n"])) for r in rows] == [
        ("CardDeclined", 4),
        ("GatewayTimeout", 3),
    ]
    # The metric filter counted each logged failure, by error code too.
    got = pipelines(
        "metrics", "get", "Shop/Failures", "FailedDeliveriesByCode", "--stat", "Sum",
        "-d", "ErrorCode=GatewayTimeout", "--since", "1h", "-c", config,
    )  # fmt: skip
    assert sum(p["Sum"] for p in json.loads(got.stdout)["Datapoints"]) == 3
    got = pipelines(
        "metrics", "get", "Shop/Failures", "FailedDeliveries", "--stat", "Sum",
        "--since", "1h", "-c", config,
    )  # fmt: skip
    assert sum(p["Sum"] for p in json.loads(got.stdout)["Datapoints"]) == 7
    [alarm] = json.loads(pipelines("alarms", "list", "-c", config).stdout)
    assert (alarm["AlarmName"], alarm["MetricName"]) == ("failing-often", "FailedDeliveries")


def test_webhooks_example_verifies_pushes_posts_to_chat_and_dead_letters() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "webhooks" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Three signed pushes accepted; the one with a wrong signature refused.
    assert report["answers"] == [200, 200, 200, 401]
    # Only pushes to main become messages; the feature branch matches no rule.
    assert report["chat"] == [
        {
            "channel": "deploys",
            "repository": "shop/api",
            "text": "ada pushed to shop/api: Add the order endpoint",
        }
    ]
    # The chat refused eve's message (400): the event went to the queue as it was.
    (failed,) = report["failed"]
    assert (failed["source"], failed["detail-type"]) == ("github.com", "push")
    assert failed["detail"]["pusher"] == {"name": "eve"}


def test_orders_workflow_charges_reserves_waits_for_approval_and_publishes(
    tmp_path: Path,
) -> None:
    workflow = ROOT / "examples" / "orders-workflow"
    config = str(workflow / "pipeline.yaml")
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")}
    assert run_cli("validate", config, env=env).returncode == 0
    tested = run_cli("test", str(workflow), env=env)  # its MockConfigFile test cases
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "5 passed, 0 failed" in tested.stdout

    runner = subprocess.Popen(
        [*pipelines_command(), "run", config],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stderr is not None
        assert "pipeline started" in runner.stderr.readline()
        put = run_cli("put", "-c", config, "--input", str(workflow / "events.jsonl"), env=env)
        assert put.returncode == 0, put.stderr
        # o-1 and o-3 reach the approval (o-2's card is declined, o-4 has an item
        # sold out): the approver answers their task tokens, rejecting o-3.
        approved = subprocess.run(
            [sys.executable, str(workflow / "approve.py"), "--reject", "o-3", "--count", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert approved.returncode == 0, approved.stderr
        answers = sorted(
            (json.loads(line) for line in approved.stdout.splitlines()), key=lambda a: a["order"]
        )
        # SendTaskSuccess through the running pipeline's control socket
        assert [(a["order"], a["approved"], a["sent"]) for a in answers] == [
            ("o-1", True, "answered"),
            ("o-3", False, "answered"),
        ]

        outcomes: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while len(outcomes) < 4:
            assert time.monotonic() < deadline, f"outcomes so far: {outcomes}"
            received = run_cli(
                "queue", "receive", "outcomes", "-c", config, "-n", "10", "--delete", env=env
            )
            assert received.returncode == 0, received.stderr
            for message in json.loads(received.stdout):
                body = json.loads(message["Body"])
                outcomes[body.pop("order")] = body
            time.sleep(0.2)
    finally:
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=30)
    assert runner.returncode == 0
    assert outcomes == {
        "o-1": {"outcome": "confirmed", "charge_id": "ch-o-1", "approved_by": "ada"},
        "o-2": {"outcome": "refunded", "reason": "CardDeclined", "refunded": 0},
        "o-3": {"outcome": "refunded", "reason": "Rejected", "refunded": 75},
        "o-4": {"outcome": "refunded", "reason": "OutOfStock", "refunded": 60},
    }
    steps = [json.loads(line) for line in out.splitlines()]
    charges = sorted(
        (s["order"], s["attempt"], s["result"]) for s in steps if s["step"] == "charge"
    )
    assert charges == [
        ("o-1", 1, "charged"),
        ("o-2", 1, "declined"),
        ("o-3", 1, "gateway busy"),
        ("o-3", 2, "charged"),  # retried after its backoff
        ("o-4", 1, "charged"),
    ]
    reserved = {(s["order"], s["sku"]) for s in steps if s["step"] == "reserve"}
    # o-4's tea may or may not be reserved before its sold-out item fails the Map
    assert {("o-1", "mug"), ("o-1", "tea"), ("o-3", "teapot"), ("o-4", "sold-out")} <= reserved
    assert not any(order == "o-2" for order, _ in reserved)  # declined: never reserved


def test_clickstream_lake_writes_views_by_customer_and_hour_without_bots(tmp_path: Path) -> None:
    lake_example = ROOT / "examples" / "clickstream-lake"
    config = str(lake_example / "pipeline.yaml")
    env = {**os.environ, "PIPELINES_STATE": str(tmp_path / "state.db")}
    assert run_cli("validate", config, env=env).returncode == 0
    tested = run_cli("test", str(lake_example), env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    views = [json.loads(json.loads(line)["Detail"]) for line in
             (lake_example / "events.jsonl").read_text().splitlines()]  # fmt: skip
    humans = {v["n"]: v for v in views if "n" in v and "bot" not in v["user_agent"].lower()}
    assert 0 < len(humans) < len([v for v in views if "n" in v])
    lake = tmp_path / "buckets" / "clickstream-lake"  # an undeclared bucket: beside the state

    def json_views() -> dict[str, list[dict[str, Any]]]:
        found = {}
        for path in sorted((lake / "json").rglob("*.gz")):
            text = gzip.decompress(path.read_bytes()).decode()
            found[path.relative_to(lake).as_posix()] = [json.loads(x) for x in text.splitlines()]
        return found

    def parquet_rows() -> dict[str, list[dict[str, Any]]]:
        if parquet is None:
            return {}
        return {
            path.relative_to(lake).as_posix(): parquet.read_table(path).to_pylist()
            for path in sorted((lake / "parquet").rglob("*.parquet"))
        }

    def count(found: dict[str, list[dict[str, Any]]]) -> int:
        return sum(len(rows) for rows in found.values())

    runner = subprocess.Popen(
        [*pipelines_command(), "run", config], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert runner.stderr is not None
        assert "pipeline started" in runner.stderr.readline()
        put = run_cli("put", "-c", config, "--input", str(lake_example / "events.jsonl"), env=env)
        assert put.returncode == 0, put.stderr
        # The buffers hold for 15 minutes: flushed until every view is written
        # (the rule's deliveries reach the streams just after the put).
        deadline = time.monotonic() + 60
        while count(json_views()) < len(humans) or (
            parquet is not None and count(parquet_rows()) < len(humans)
        ):
            assert time.monotonic() < deadline, (json_views(), parquet_rows())
            for stream in ("views-json", "views-parquet"):
                flushed = run_cli("firehose", "flush", stream, "-c", config, env=env)
                assert flushed.returncode == 0, flushed.stderr
            time.sleep(0.2)
        listed = run_cli(
            "firehose", "objects", "views-json", "-c", config, "--output", "json", env=env
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    assert runner.returncode == 0

    written = json_views()
    assert sorted(v["n"] for rows in written.values() for v in rows) == sorted(humans)
    layout = re.compile(
        r"json/customer=(\w+)/hour=\d{4}-\d{2}-\d{2}-\d{2}/views-json-1-"
        r"\d{4}(-\d{2}){5}-[0-9a-f-]{36}\.gz"
    )
    for key, rows in written.items():
        match = layout.fullmatch(key)
        assert match, key
        assert {v["customer"] for v in rows} == {match.group(1)}  # partitioned by customer
    assert {v["customer"] for v in humans.values()} == {
        layout.fullmatch(k).group(1)  # type: ignore[union-attr]
        for k in written
    }
    assert sorted(o["Key"] for o in json.loads(listed.stdout)) == sorted(written)
    if parquet is not None:
        tables = parquet_rows()
        for key, found in tables.items():
            assert {row["customer"] for row in found} == {key.split("/")[1].split("=")[1]}
            assert re.fullmatch(
                r"parquet/customer=(\w+)/hour=[\d-]+/views-parquet-1-.+\.parquet", key
            )
        rows = [row for found in tables.values() for row in found]
        assert sorted(r["ms_on_page"] for r in rows) == sorted(
            v["ms_on_page"] for v in humans.values()
        )
        assert set(rows[0]) == {"customer", "user", "page", "ms_on_page", "viewed_at"}
