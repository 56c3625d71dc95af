"""The jsonl plugin as pipelines loads and runs it: through its entry point,
inside a Runtime, and through the pipelines command, on real files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pipelines_jsonl.plugin import JsonlTarget, JsonlTargetType

from pipelines.errors import ConfigError, DeliveryError
from pipelines.pluginmanager import list_plugins, target_types
from pipelines.runtime import Runtime
from pipelines.targets import DeliveryContext

HERE = Path(__file__).resolve().parent.parent
PIPELINES = Path(sys.executable).with_name("pipelines")
CONTEXT = DeliveryContext("rule", "target", {})


def read_lines(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")  # whole lines only
    return [json.loads(line) for line in text.splitlines()]


def order(number: int, source: str = "shop") -> dict[str, Any]:
    detail = {"order": number, "note": "ünïcode\nand a newline"}
    return {"Source": source, "DetailType": "OrderPlaced", "Detail": json.dumps(detail)}


def test_the_plugin_is_loaded_through_its_entry_point() -> None:
    (info,) = [p for p in list_plugins() if "jsonl" in p.targets]
    assert (info.name, info.version, info.targets) == ("jsonl", "0.1.0", ("jsonl",))
    assert info.hooks == ("register_targets",)
    assert isinstance(target_types()["jsonl"], JsonlTargetType)


async def test_a_runtime_delivers_matching_events_as_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "orders.jsonl"
    runtime = Runtime()
    runtime.add_resource("orders", "jsonl", {"path": str(out)})
    bus = runtime.bus()
    bus.put_rule("shop-orders", pattern={"source": ["shop"]})
    await bus.put_targets(
        "shop-orders", [{"id": "file", "resource": "orders", "input_path": "$.detail"}]
    )
    async with runtime:
        entries = [order(n) for n in range(20)] + [order(99, source="crm")]
        for start in range(0, len(entries), 10):  # PutEvents takes 10 at a time
            result = await runtime.put_events(entries[start : start + 10])
            assert result["FailedEntryCount"] == 0
        await runtime.wait_until_idle()
    # Deliveries run concurrently, so lines come in any order; none is torn.
    received = sorted(read_lines(out), key=lambda detail: detail["order"])
    assert received == [{"order": n, "note": "ünïcode\nand a newline"} for n in range(20)]


async def test_concurrent_deliveries_share_one_write_and_fsync_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    fsyncs: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    runtime = Runtime()
    target = runtime.add_resource("out", "jsonl", {"path": str(out), "fsync": True})
    async with runtime:
        await asyncio.gather(*(target.deliver({"n": n}, CONTEXT) for n in range(50)))
        assert read_lines(out) == [{"n": n} for n in range(50)]
        await target.deliver("one more", CONTEXT)
    assert read_lines(out)[-1] == "one more"
    # One batch for the 50 that arrived together, one for the last; both
    # written (and fsynced) in a worker thread, never on the event loop's.
    assert len(fsyncs) == 2
    assert threading.main_thread().name not in fsyncs


async def test_one_batch_at_a_time_touches_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[bytes]] = []
    busy = [0, 0]  # now, most at once
    real_write = JsonlTarget._write

    def slow_write(self: JsonlTarget, lines: list[bytes]) -> None:
        busy[0] += 1
        busy[1] = max(busy)
        time.sleep(0.05)  # a slow disk: deliveries pile up behind the lock
        batches.append(lines)
        real_write(self, lines)
        busy[0] -= 1

    monkeypatch.setattr(JsonlTarget, "_write", slow_write)
    runtime = Runtime()
    target = runtime.add_resource("out", "jsonl", {"path": str(tmp_path / "out.jsonl")})
    async with runtime:
        first = asyncio.create_task(target.deliver(0, CONTEXT))
        await asyncio.sleep(0.01)  # the first batch holds the lock now
        await asyncio.gather(first, *(target.deliver(n, CONTEXT) for n in range(1, 6)))
    assert busy[1] == 1
    assert [[json.loads(line) for line in batch] for batch in batches] == [[0], [1, 2, 3, 4, 5]]
    assert read_lines(tmp_path / "out.jsonl") == [0, 1, 2, 3, 4, 5]


async def test_a_cancelled_delivery_s_write_finishes_before_stop_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = JsonlTarget._write

    def slow_write(self: JsonlTarget, lines: list[bytes]) -> None:
        time.sleep(0.1)  # a thread cannot be interrupted
        real_write(self, lines)

    monkeypatch.setattr(JsonlTarget, "_write", slow_write)
    out = tmp_path / "out.jsonl"
    runtime = Runtime()
    target = runtime.add_resource("out", "jsonl", {"path": str(out)})
    async with runtime:
        delivery = asyncio.create_task(target.deliver({"n": 1}, CONTEXT))
        await asyncio.sleep(0.01)  # the write is in its thread now
        delivery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await delivery
    # stop() waited for the write the cancelled delivery left in its thread.
    assert read_lines(out) == [{"n": 1}]


async def test_a_relative_path_is_fixed_when_the_target_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    runtime = Runtime()
    target = runtime.add_resource("out", "jsonl", {"path": "out.jsonl"})
    async with runtime:
        monkeypatch.chdir(tmp_path / "b")  # the process moves; the file does not
        await target.deliver({"n": 1}, CONTEXT)
    assert read_lines(tmp_path / "a" / "out.jsonl") == [{"n": 1}]
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "in-one-batch"])
async def test_the_file_rotates_to_path_1_before_max_bytes(tmp_path: Path, together: bool) -> None:
    out = tmp_path / "log.jsonl"
    line = len(json.dumps({"n": 0, "pad": "xxxxxxxxx"}, separators=(",", ":"))) + 1
    runtime = Runtime()
    target = runtime.add_resource("log", "jsonl", {"path": str(out), "max_bytes": 2 * line})
    payloads = [{"n": n, "pad": "xxxxxxxxx"} for n in range(5)]
    async with runtime:
        if together:
            await asyncio.gather(*(target.deliver(p, CONTEXT) for p in payloads))
        else:
            for payload in payloads:
                await target.deliver(payload, CONTEXT)
    # 0 1 | 2 3 | 4: one previous file is kept, the oldest lines are gone.
    assert [p["n"] for p in read_lines(out)] == [4]
    assert [p["n"] for p in read_lines(tmp_path / "log.jsonl.1")] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "log.jsonl.1"]


async def test_a_line_longer_than_max_bytes_is_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    runtime = Runtime()
    target = runtime.add_resource("log", "jsonl", {"path": str(out), "max_bytes": 5})
    async with runtime:
        await target.deliver({"long": "x" * 20}, CONTEXT)
        await target.deliver({"next": 1}, CONTEXT)
    assert read_lines(tmp_path / "log.jsonl.1") == [{"long": "x" * 20}]
    assert read_lines(out) == [{"next": 1}]


@pytest.mark.parametrize(
    ("settings", "where", "message"),
    [
        ({}, "target out.path", "is required"),
        ({"path": ""}, "target out.path", "is required"),
        ({"path": 7}, "target out.path", "is required"),
        ({"path": "a", "fsnyc": True}, "target out.fsnyc", "did you mean 'fsync'?"),
        ({"path": "a", "fsync": "yes"}, "target out.fsync", "must be true or false"),
        ({"path": "a", "max_bytes": 0}, "target out.max_bytes", "must be between 1"),
        ({"path": "a", "max_bytes": 1.5}, "target out.max_bytes", "must be an integer"),
        ({"path": "a", "max_bytes": True}, "target out.max_bytes", "must be an integer"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_setting(
    settings: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Runtime().add_resource("out", "jsonl", settings)
    assert caught.value.where == where
    assert message in caught.value.message


async def test_create_does_no_io_and_start_checks_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "out.jsonl"
    runtime = Runtime()
    runtime.add_resource("out", "jsonl", {"path": str(out)})  # nothing checked on disk yet
    with pytest.raises(ConfigError) as caught:
        await runtime.start()
    assert caught.value.where == "target out.path"
    assert "does not exist" in caught.value.message
    assert not out.parent.exists()


async def test_write_failures_and_bad_payloads_raise_delivery_error(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked.jsonl"
    blocked.mkdir()  # a directory where the file should be: every write fails
    runtime = Runtime()
    failing = runtime.add_resource("failing", "jsonl", {"path": str(blocked)})
    working = runtime.add_resource("working", "jsonl", {"path": str(tmp_path / "ok.jsonl")})
    async with runtime:
        with pytest.raises(DeliveryError) as caught:
            await failing.deliver({"n": 1}, CONTEXT)
        assert (caught.value.code, caught.value.retryable) == ("WriteFailed", True)
        assert str(blocked) in caught.value.message
        with pytest.raises(DeliveryError) as caught:
            await working.deliver({"not": object()}, CONTEXT)
        assert (caught.value.code, caught.value.retryable) == ("InvalidPayload", False)
        await working.deliver({"n": 2}, CONTEXT)  # neither failure left the lock taken
    assert read_lines(tmp_path / "ok.jsonl") == [{"n": 2}]


def test_a_failed_write_takes_back_its_partial_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"before":1}\n')
    target = JsonlTarget("out", out, fsync=False, max_bytes=None)
    real_write = os.write

    def short_then_full_disk(fd: int, data: Any) -> int:
        monkeypatch.setattr(os, "write", failing_write)
        return real_write(fd, bytes(data[:3]))  # the first call writes 3 bytes only

    def failing_write(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full_disk)
    with pytest.raises(OSError):
        target._write([b'{"n":1}\n', b'{"n":2}\n'])
    monkeypatch.undo()
    assert out.read_bytes() == b'{"before":1}\n'


def run_cli(*args: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ORDERS_FILE", "PIPELINES_STATE")}
    return subprocess.run(
        [str(PIPELINES), *args],
        cwd=cwd,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pipelines_run_writes_the_example_s_file(tmp_path: Path) -> None:
    # The config in one directory, the process in another: everything the run
    # creates stays under tmp_path, and we see which one the file goes to.
    (tmp_path / "config").mkdir()
    (tmp_path / "work").mkdir()
    config = tmp_path / "config" / "example.yaml"
    shutil.copy(HERE / "example.yaml", config)
    events = tmp_path / "events.jsonl"
    entries = [order(1), order(2), order(3, source="crm"), order(4)]  # crm matches no rule
    events.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    done = run_cli("run", str(config), "--input", str(events), cwd=tmp_path / "work")
    assert done.returncode == 0, done.stderr
    # ORDERS_FILE is unset: the default orders.jsonl is in the working directory.
    received = sorted(read_lines(tmp_path / "work" / "orders.jsonl"), key=lambda d: d["order"])
    assert [d["order"] for d in received] == [1, 2, 4]
    assert not (tmp_path / "config" / "orders.jsonl").exists()


def test_pipelines_validate_locates_a_bad_setting(tmp_path: Path) -> None:
    config = (HERE / "example.yaml").read_text(encoding="utf-8")
    (tmp_path / "bad.yaml").write_text(config.replace("fsync:", "fsnyc:"), encoding="utf-8")
    done = run_cli("validate", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 1
    line = config[: config.index("fsync:")].count("\n") + 1
    assert f"bad.yaml:{line}:5: resources.orders.fsnyc: unknown setting" in done.stderr
    assert "did you mean 'fsync'?" in done.stderr


def test_pipelines_test_passes_on_the_example_test(tmp_path: Path) -> None:
    done = run_cli("test", str(HERE / "example.test.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "1 passed, 0 failed"
    assert list(tmp_path.iterdir()) == []  # the mock wrote nothing
