"""MQTT throughput: events per second from mosquitto_pub through pipelines to
an MQTT target, read back by mosquitto_sub, against a real Mosquitto.

- one runner (a Runtime in this process): an mqtt subscription on ``in`` ->
  a rule -> an mqtt target publishing to ``out``, at QoS 0 and at QoS 1
  (QoS 1 messages are acknowledged once delivered: ``ack: delivered``);
- runners in a shared group: 1, 2 and 3 ``pipelines run`` processes with a
  ``cluster`` section, publishing each event to ``out`` (QoS 1).

The peer, run in the same process on the same broker, is the broker alone:
mosquitto_pub straight to mosquitto_sub on one topic at the same QoS. Its
ratio (runner events/s over broker msgs/s, the target is 0.3x at QoS 0 and
0.5x at QoS 1) says what subscribing, matching, delivering and publishing
again cost on top of what the clients and broker need anyway. A second peer,
"client alone", is the ceiling of any runner on this client library: two
gmqtt connections in this process that only pass each message from ``in``
to ``out`` (acknowledged on arrival; at QoS 1 the publishes in flight kept
within the broker's Receive Maximum), with no bus. The runner has a state
database (durable intake) and a persistent session, as a deployed one does;
its session is ended after each run, or the broker would queue for it what
the peers publish. Everything runs under ``tuned_process`` (thread switch
interval 0.2 ms, the collector's young threshold raised), and the runner's
heap is frozen once it has started (``settle_heap``), as the pipelines
command runs a pipeline. Each figure is
the median of the repeats, runner and peers run alternately; the load
average is printed with them. Runner scaling is quoted against one runner in
the same group setup. The machine has 2 cores, which
mosquitto, the clients and the runners share: read the scaling with that.

    python bench/bench_mqtt.py [--events 20000] [--repeats 3] [--runners 1,2,3]

To measure other code with this script (a base commit, say), put its tree
first on the path: ``PYTHONPATH=/path/to/base python bench/bench_mqtt.py``
(its ``pipelines`` and ``plugins`` are used; the peers are this script's, so
they stay the same; the first line printed says where the code came from).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gmqtt
from gmqtt.storage import PersistentStorage

from pipelines.process import settle_heap, tuned_process
from pipelines.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
# For the tests' broker helper only, then off the path again: pipelines and
# plugins come from the path as given (PYTHONPATH=/path/to/base measures the
# base's code).
sys.path.insert(0, str(ROOT))
from tests.mosquitto import Mosquitto, free_port  # noqa: E402 - the tests' broker

sys.path.remove(str(ROOT))


def lines(count: int) -> list[str]:
    return [
        json.dumps({"Source": "bench", "DetailType": "n", "Detail": json.dumps({"n": n})})
        for n in range(count)
    ]


def timed_through(broker: Mosquitto, topic: str, count: int, qos: int) -> float:
    """Seconds from the first publish until mosquitto_sub has read ``count``
    on out. QoS 0 may lose messages under load (the broker drops them for a
    client that lags): then the time to the last one that came, scaled to
    ``count``, and the loss is printed."""
    messages = lines(count)  # made before the clock starts
    reader = broker.sub("out", count, timeout=600)
    # What mosquitto_sub printed so far (a line per message) and when the
    # last chunk came. Read in chunks, not line by line: this thread shares
    # the GIL with the runner under test, and a Python call per line would
    # slow the runner (not the broker-alone peer, which has the process to
    # itself) and so bias the ratio.
    arrived = [0, 0.0]

    def read() -> None:
        assert reader.stdout is not None
        descriptor = reader.stdout.fileno()
        while chunk := os.read(descriptor, 1 << 16):
            arrived[0] += chunk.count(b"\n")
            arrived[1] = time.perf_counter()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    started = time.perf_counter()
    broker.pub(topic, *messages, qos=qos)
    while arrived[0] < count:
        seen = arrived[0]
        time.sleep(2)
        if arrived[0] == seen:  # nothing more for 2 s: the rest was dropped
            break
    reader.kill()
    thread.join()
    if not arrived[0]:
        raise SystemExit(f"nothing arrived on out (topic {topic}, QoS {qos})")
    if arrived[0] < count:
        if qos:
            raise SystemExit(f"only {arrived[0]} of {count} arrived on out at QoS {qos}")
        print(f"  (QoS 0: {count - arrived[0]} of {count} dropped under load)")
    return (arrived[1] - started) * count / arrived[0]


def broker_only(broker: Mosquitto, count: int, qos: int) -> float:
    return timed_through(broker, "out", count, qos)


class Acked(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of QoS 1 publishes awaiting PUBACK (it removes each when
    its PUBACK comes): here also a wake-up per PUBACK."""

    def __init__(self) -> None:
        super().__init__()
        self.freed = asyncio.Event()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self.freed.set()


async def client_alone(broker: Mosquitto, count: int, qos: int) -> float:
    """Two gmqtt connections passing messages from in to out, nothing else.

    The inbound one acknowledges on arrival (gmqtt's default); the outbound
    one publishes as they come, and at QoS 1 keeps to the broker's Receive
    Maximum (gmqtt raises OverflowError past it: wait for a PUBACK), as the
    runner does. Self-contained, so it measures the same whichever tree of
    pipelines is on the path."""
    acked = Acked()
    inbound, outbound = (
        gmqtt.Client("alone-in"),
        gmqtt.Client("alone-out", persistent_storage=acked),
    )
    forwarded: asyncio.Queue[bytes] = asyncio.Queue()
    inbound.on_message = lambda client, topic, payload, qos, properties: forwarded.put_nowait(
        payload
    )
    await outbound.connect(broker.host, broker.port)
    await inbound.connect(broker.host, broker.port)
    inbound.subscribe("in", qos=qos)

    async def forward() -> None:
        while True:
            payload = await forwarded.get()
            while True:
                try:
                    outbound.publish("out", payload, qos=qos)
                    break
                except OverflowError:  # the broker's window is full
                    acked.freed.clear()
                    await acked.freed.wait()

    task = asyncio.create_task(forward())
    try:
        await asyncio.sleep(0.3)  # subscribed
        return await asyncio.to_thread(timed_through, broker, "in", count, qos)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await inbound.disconnect()
        await outbound.disconnect()


async def one_runner(broker: Mosquitto, count: int, qos: int, state: Path) -> float:
    state.unlink(missing_ok=True)
    runtime = Runtime(state_path=state)
    settings = {"broker": {**broker.broker(), "client_id": "bench-in"}, "qos": qos}
    runtime.add_resource("in", "mqtt", {**settings, "subscribe": [{"topic": "in", "qos": qos}]})
    out = {**settings, "broker": broker.broker(), "topic": "out"}
    runtime.add_resource("out", "mqtt", out)
    runtime.bus().put_rule("all", pattern={"source": ["mqtt"]})
    await runtime.bus().put_targets("all", [{"id": "t", "resource": "out"}])
    try:
        async with runtime:
            settle_heap()  # as the pipelines command does once started
            return await asyncio.to_thread(timed_through, broker, "in", count, qos)
    finally:
        await end_session(broker, "bench-in")


async def end_session(broker: Mosquitto, client_id: str) -> None:
    """End a runner's persistent session: otherwise the broker keeps queueing
    for it what the peers publish to ``in``, and hands all that to the next
    run (which then counts messages that are not its own)."""
    client = gmqtt.Client(client_id, clean_session=True, session_expiry_interval=0)
    await client.connect(broker.host, broker.port)
    await client.disconnect()


CLUSTER = """
state: STATE
cluster:
  group: GROUP
  broker: {host: 127.0.0.1, port: PORT}
resources:
  out: {type: mqtt, broker: {host: 127.0.0.1, port: PORT}, topic: out, qos: 1}
rules:
  all:
    pattern: {source: [bench]}
    targets: [{id: t, resource: out}]
"""


def runners(broker: Mosquitto, directory: Path, size: int, count: int) -> float:
    processes = []
    script = Path(sys.executable).with_name("pipelines")
    # A group per size: Mosquitto keeps handing a share to a member's session
    # after it stops (until the session expires), so groups are not reused.
    for index in range(size):
        config = directory / f"runner{size}-{index}.yaml"
        state = directory / f"r{size}-{index}" / "state.db"
        config.write_text(
            CLUSTER.replace("PORT", str(broker.port))
            .replace("STATE", str(state))
            .replace("GROUP", f"bench{size}")
        )
        log = directory / f"runner{size}-{index}.log"
        processes.append(
            subprocess.Popen(
                [str(script), "run", str(config)],
                stderr=log.open("w"),
                env={**os.environ},
            )
        )
        while "pipeline started" not in log.read_text():
            if processes[-1].poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.05)
    try:
        return timed_through(broker, f"pipelines/bench{size}/events", count, 1)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def load() -> str:
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runners", default="1,2,3", help="group sizes to run; empty for none")
    args = parser.parse_args()
    count = args.events
    sizes = [int(size) for size in args.runners.split(",") if size]
    missing = [
        tool for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub") if not shutil.which(tool)
    ]
    if missing:
        sys.exit(
            f"{', '.join(missing)} not found: the benchmark runs a real Mosquitto and its"
            " clients (scripts/system-packages installs mosquitto and mosquitto-clients)"
        )
    with tuned_process(), tempfile.TemporaryDirectory() as tmp:  # as the pipelines command
        directory = Path(tmp)
        broker = Mosquitto(directory, free_port())
        broker.start()
        try:
            import plugins.mqtt

            code = Path(plugins.mqtt.__file__).resolve().parent.parent.parent
            print(f"{count} events per run, median of {args.repeats} runs; code from {code}\n")
            for qos in (0, 1):
                ours, peer, alone = [], [], []
                for _ in range(args.repeats):  # alternately: the same conditions for each
                    state = directory / "one" / "state.db"
                    state.parent.mkdir(exist_ok=True)
                    ours.append(asyncio.run(one_runner(broker, count, qos, state)))
                    peer.append(broker_only(broker, count, qos))
                    alone.append(asyncio.run(client_alone(broker, count, qos)))
                mine, base = statistics.median(ours), statistics.median(peer)
                ceiling = statistics.median(alone)
                print(
                    f"QoS {qos}: one runner {count / mine:8,.0f} events/s"
                    f" | broker alone {count / base:8,.0f} msgs/s | ratio {base / mine:5.2f}x"
                    f" | client alone {count / ceiling:8,.0f} msgs/s ({ceiling / mine:4.2f}x)"
                    f" | load {load()}"
                )
            print()
            single = 0.0
            for size in sizes:
                times = [runners(broker, directory, size, count) for _ in range(args.repeats)]
                median = statistics.median(times)
                single = single or median
                print(
                    f"shared group, {size} runner(s): {count / median:10,.0f} events/s"
                    f" | vs the first size {single / median:4.2f}x | load {load()}"
                )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
