"""State machines: state transitions per second, ours against moto's interpreter.

Two definitions, the issue's (docs/states.md):

- ``chain``: 20 Pass states one after the other; ``--executions`` (200)
  executions run one at a time (each started, then waited for), and the
  same number 20 at a time;
- ``map``: an inline Map over ``--items`` (10,000) items whose iterator is
  3 Pass states; one execution (AWS's inline Map runs 40 iterations at
  once, and so does ours). Its 80,005 history events are past the 25,000
  a STANDARD execution may have (AWS fails it, and so does ours): the
  benchmark lifts that limit (``Executions.history_limit``).

A transition is a state entered: the ``...StateEntered`` events of the
executions' histories (the Map's iterations' included), counted after the
clock stops; ours and moto's must count the same or the run stops.
Transitions/s is that count over the wall time from the first start to the
last end.

Ours, each in a ``Runtime`` with a state database as ``pipelines run``
runs one (the executions' status-change events go through the durable
intake, their metrics to the metric store), started and awaited through
``executions_of(runtime)``:

- ``EXPRESS``: in memory;
- ``STANDARD SQLite``: durable on a fresh SQLite state file (WAL,
  ``synchronous=NORMAL``: a transition's commit waits for its WAL write,
  not for the disk), one transaction per state transition (a Map is one
  transition at the top level: its iterations run in memory, see
  docs/states.md);
- ``STANDARD PostgreSQL``: the same on a fresh database of a private
  server (``tests/postgres.py``: ``fsync=off``, ``synchronous_commit=on``),
  or of ``--postgres URL``; ``--no-postgres`` leaves it out;
- ``interpreter``: ``run_machine`` alone (no runtime, no store), for
  reference: what the runtime around an execution costs.

The peer is moto's executing interpreter (moto 5's ``stepfunctions``
backend with ``execute_state_machine``, the parser-based interpreter
LocalStack wrote), in the same process under ``mock_aws``: the machines are
created through boto3, executions are started on the backend directly (no
HTTP layer: the same footing as ours), and an execution ends when its
worker thread does. moto runs EXPRESS and STANDARD alike (in memory, one
thread per execution, threads for a Map's iterations), so it runs once per
definition, as STANDARD; both of our types are measured against it.

Targets (issue 29): EXPRESS at least 5x moto; STANDARD at least 0.3x EXPRESS.

Every figure is the median of ``--repeats`` runs (moto's map: of
``--moto-repeats``, 1 by default: it takes about a minute). Runs under
``tuned_process`` as the ``pipelines`` command does; run it alone:

    flock /tmp/pipelines-bench.lock python bench/bench_states.py \\
        [--repeats 3] [--executions 200] [--items 10000] [--moto-repeats 1] \\
        [--postgres URL | --no-postgres] [--no-moto] [--only chain|map]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench_state import Bench, load

from pipelines.process import tuned_process
from pipelines.runtime import Runtime
from plugins.states.definition import parse_definition
from plugins.states.executions import executions_of
from plugins.states.interpreter import run_machine

ROLE = "arn:aws:iam::123456789012:role/bench"
AT_ONCE = 20


def chain_definition(states: int = 20) -> dict[str, Any]:
    chain: dict[str, Any] = {
        f"S{n}": {"Type": "Pass", "Next": f"S{n + 1}"} for n in range(states - 1)
    }
    chain[f"S{states - 1}"] = {"Type": "Pass", "End": True}
    return {"StartAt": "S0", "States": chain}


def map_definition() -> dict[str, Any]:
    iterator = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Next": "B"},
            "B": {"Type": "Pass", "Next": "C"},
            "C": {"Type": "Pass", "End": True},
        },
    }
    return {
        "StartAt": "Items",
        "States": {
            "Items": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, **iterator},
                "End": True,
            }
        },
    }


def entered(events: list[dict[str, Any]]) -> int:
    return sum(1 for event in events if str(event["type"]).endswith("StateEntered"))


# -- ours ---------------------------------------------------------------------------------


async def ours(
    location: str, machine_type: str, definition: dict[str, Any], inputs: list[str], at_once: int
) -> tuple[float, int]:
    """(seconds, transitions) of running ``inputs``' executions, ``at_once`` at a time."""
    runtime = Runtime(state_path=location)
    runtime.add_resource(
        "flow", "state_machine", {"definition": definition, "state_machine_type": machine_type}
    )
    async with runtime:
        engine = executions_of(runtime)
        # The Map's 80,005 events are past AWS's 25,000 for a STANDARD
        # execution, which AWS (and ours) would fail: lifted, to measure the
        # same work as EXPRESS does.
        engine.history_limit = None
        arns: list[str] = []

        async def one(text: str) -> None:
            started = await engine.start_execution("flow", text, str(uuid.uuid4()))
            record = await engine.wait_for(started["executionArn"])
            if record.status != "SUCCEEDED":
                raise SystemExit(f"{started['executionArn']}: {record.status} {record.cause}")
            arns.append(started["executionArn"])

        clock = time.perf_counter()
        for start in range(0, len(inputs), at_once):
            await asyncio.gather(*(one(text) for text in inputs[start : start + at_once]))
        seconds = time.perf_counter() - clock
        transitions = 0
        for arn in arns:
            transitions += entered(await engine.get_execution_history(arn))
    return seconds, transitions


async def bare(definition: dict[str, Any], inputs: list[str]) -> tuple[float, int]:
    machine = parse_definition(json.dumps(definition))
    logs = []
    clock = time.perf_counter()
    for text in inputs:
        outcome, log = await run_machine(machine, text)
        if outcome.status != "SUCCEEDED":
            raise SystemExit(f"run_machine: {outcome.status} {outcome.cause}")
        logs.append(log)
    seconds = time.perf_counter() - clock
    return seconds, sum(entered([e.to_aws() for e in log.events]) for log in logs)


# -- moto ---------------------------------------------------------------------------------


class Moto:
    """moto's stepfunctions backend with its interpreter, in this process."""

    def __init__(self) -> None:
        import boto3
        from moto import mock_aws

        self.mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self.mock.start()
        self.client = boto3.client("stepfunctions", region_name="us-east-1")
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        self.backend = stepfunctions_parser_backends["123456789012"]["us-east-1"]
        self.names = 0

    def close(self) -> None:
        self.mock.stop()

    def run(self, definition: dict[str, Any], inputs: list[str], at_once: int) -> tuple[float, int]:
        from moto.stepfunctions.parser.utils import TMP_THREADS

        self.names += 1
        arn = self.client.create_state_machine(
            name=f"flow{self.names}", definition=json.dumps(definition), roleArn=ROLE
        )["stateMachineArn"]
        arns = []
        clock = time.perf_counter()
        for start in range(0, len(inputs), at_once):
            first = len(TMP_THREADS)
            for text in inputs[start : start + at_once]:
                execution = self.backend.start_execution(arn, str(uuid.uuid4()), text)
                arns.append(execution.execution_arn)
            # every thread started meanwhile (executions, Map iterations) has ended
            while True:
                running = [t for t in TMP_THREADS[first:] if t.is_alive()]
                if not running:
                    break
                for thread in running:
                    thread.join()
        seconds = time.perf_counter() - clock
        transitions = 0
        for execution_arn in arns:
            described = self.client.describe_execution(executionArn=execution_arn)
            if described["status"] != "SUCCEEDED":
                raise SystemExit(f"moto {execution_arn}: {described['status']}")
            transitions += entered(self.history(execution_arn))
        del TMP_THREADS[:]
        return seconds, transitions

    def history(self, arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        more: dict[str, str] = {}
        while True:
            page = self.client.get_execution_history(executionArn=arn, maxResults=1000, **more)
            events += page["events"]
            if "nextToken" not in page:
                return events
            more = {"nextToken": page["nextToken"]}


# -- the runs -----------------------------------------------------------------------------


def rate(repeats: int, run: Callable[[], tuple[float, int]], want: int) -> float:
    """The median transitions/s of ``repeats`` runs, each checked to have made ``want``."""
    rates = []
    for _ in range(repeats):
        gc.collect()  # the garbage of the run before (a Map's history: 80,000 events) is not timed
        seconds, transitions = run()
        if transitions != want:
            raise SystemExit(f"{transitions} transitions, not {want}")
        rates.append(transitions / seconds)
    return float(sorted(rates)[len(rates) // 2])


def run_async(work: Callable[[], Coroutine[Any, Any, tuple[float, int]]]) -> tuple[float, int]:
    return asyncio.run(work())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--moto-repeats", type=int, default=1)
    parser.add_argument("--postgres", help="a PostgreSQL server's URL (default: a private one)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-moto", action="store_true")
    parser.add_argument("--only", choices=["chain", "map"], help="one definition (default: both)")
    args = parser.parse_args()
    print(f"load average before: {load()}")
    print(f"thread switch interval (tuned_process): {sys.getswitchinterval()} s")
    engines = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    moto = None if args.no_moto else Moto()
    shapes = [
        (
            f"chain of 20 Pass, {args.executions} executions one at a time",
            chain_definition(),
            ["{}"] * args.executions,
            1,
            args.repeats,
        ),
        (
            f"chain of 20 Pass, {args.executions} executions {AT_ONCE} at a time",
            chain_definition(),
            ["{}"] * args.executions,
            AT_ONCE,
            args.repeats,
        ),
        (
            f"inline Map over {args.items:,} items, 3 Pass each",
            map_definition(),
            [json.dumps({"items": list(range(args.items))})],
            1,
            args.moto_repeats,
        ),
    ]
    if args.only:
        prefix = {"chain": "chain", "map": "inline"}[args.only]
        shapes = [shape for shape in shapes if shape[0].startswith(prefix)]
    with tempfile.TemporaryDirectory(prefix="bench-states-") as directory:
        bench = Bench(args, Path(directory))
        try:
            for title, definition, inputs, at_once, moto_repeats in shapes:
                want = entered_per(definition, args.items) * len(inputs)
                print(f"\n{title}: {want:,} transitions a run")
                Bench.row("", "transitions/s", "x moto", "x EXPRESS")

                def ours_on(
                    location: str,
                    machine_type: str,
                    definition: dict[str, Any] = definition,
                    inputs: list[str] = inputs,
                    at_once: int = at_once,
                ) -> tuple[float, int]:
                    return run_async(
                        lambda: ours(location, machine_type, definition, inputs, at_once)
                    )

                peer = None
                if moto is not None:
                    peer = rate(
                        moto_repeats,
                        lambda d=definition, i=inputs, a=at_once: moto.run(d, i, a),
                        want,
                    )
                express = rate(
                    args.repeats,
                    lambda o=ours_on: bench.on("sqlite", lambda where: o(where, "EXPRESS")),
                    want,
                )
                rows = [("ours EXPRESS", express)]
                for engine in engines:
                    standard = rate(
                        args.repeats,
                        lambda o=ours_on, e=engine: bench.on(e, lambda where: o(where, "STANDARD")),
                        want,
                    )
                    name = "SQLite" if engine == "sqlite" else "PostgreSQL"
                    rows.append((f"ours STANDARD {name}", standard))
                if at_once == 1:
                    alone = rate(
                        args.repeats,
                        lambda d=definition, i=inputs: run_async(lambda: bare(d, i)),
                        want,
                    )
                    rows.append(("interpreter alone (run_machine)", alone))
                for what, value in rows:
                    Bench.row(
                        what,
                        value,
                        f"{value / peer:.1f}x" if peer else "-",
                        f"{value / express:.2f}x",
                    )
                if peer is not None:
                    Bench.row(f"moto {moto_version()} (median of {moto_repeats})", peer, "1.0x", "")
        finally:
            bench.close()
            if moto is not None:
                moto.close()
    print(f"\nload average after: {load()}")


def entered_per(definition: dict[str, Any], items: int) -> int:
    """States an execution of ``definition`` enters."""
    if definition["StartAt"] == "Items":
        return 1 + 3 * items
    return len(definition["States"])


def moto_version() -> str:
    import moto

    return str(moto.__version__)


if __name__ == "__main__":
    with tuned_process([]):
        main()
