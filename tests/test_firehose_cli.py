"""``pipelines firehose ...`` in real subprocesses: list and describe a state
database, put records into a stream's buffer, flush a running pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from pipelines.runtime import Runtime
from plugins.firehose.store import FirehoseStore

from .firehose_helpers import delimited, firehose_plugins, lines, objects
from .helpers import pipelines_command

ROOT = Path(__file__).resolve().parents[1]
DESTINATION = delimited("lake", "in/", 900, 5)


@pytest.fixture
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The subprocesses' environment: this worktree first on the path and,
    until the venv is installed again with the plugin's entry point, a
    distribution declaring it (what an installed package declares)."""
    path = [str(ROOT)]
    if not any(e.name == "firehose" for e in entry_points(group="pipelines")):
        shim = tmp_path_factory.mktemp("entry")
        info = shim / "pipelines_firehose_tests-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: pipelines-firehose-tests\nVersion: 0\n"
        )
        (info / "entry_points.txt").write_text("[pipelines]\nfirehose = plugins.firehose\n")
        path.append(str(shim))
    yield {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def cli(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*pipelines_command(), "firehose", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result


def make_stream(state: Path) -> None:
    async def run() -> None:
        async with await FirehoseStore.open(state) as store:
            request = {
                "DeliveryStreamType": "DirectPut",
                "ExtendedS3DestinationConfiguration": DESTINATION,
            }
            await store.create("lake", request, {}, made_by_api=False)

    asyncio.run(run())


def test_list_describe_and_put(tmp_path: Path, cli_env: dict[str, str]) -> None:
    state = tmp_path / "state.db"
    make_stream(state)
    listed = json.loads(cli(cli_env, "list", "--state", str(state), "--output", "json").stdout)
    assert listed == [
        {
            "DeliveryStreamName": "lake",
            "DeliveryStreamType": "DirectPut",
            "VersionId": "1",
            "BufferedRecords": 0,
            "BufferedBytes": 0,
        }
    ]
    described = json.loads(
        cli(cli_env, "describe", "lake", "--state", str(state), "--output", "json").stdout
    )
    assert described["DeliveryStreamName"] == "lake"
    assert described["Destinations"][0]["ExtendedS3DestinationDescription"]["Prefix"] == "in/"
    (tmp_path / "records.txt").write_text("three\nfour\n")
    put = json.loads(
        cli(
            cli_env,
            "put",
            "lake",
            "one",
            "two",
            "--input",
            str(tmp_path / "records.txt"),
            "--state",
            str(state),
            "--output",
            "json",
        ).stdout
    )
    assert put["FailedPutCount"] == 0 and len(put["RequestResponses"]) == 4
    listed = json.loads(cli(cli_env, "list", "--state", str(state), "--output", "json").stdout)
    assert listed[0]["BufferedRecords"] == 4
    assert listed[0]["BufferedBytes"] == len("one\ntwo\nthree\nfour\n")


def test_unknown_stream_and_missing_state_are_one_line_errors(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    state = tmp_path / "state.db"
    missing = cli(cli_env, "list", "--state", str(state), code=1)
    assert (
        missing.stderr == f"error: state database {state} does not exist: run the pipeline first\n"
    )
    make_stream(state)
    unknown = cli(cli_env, "describe", "nope", "--state", str(state), code=1)
    assert unknown.stderr == "error: ResourceNotFoundException: Firehose nope not found\n"


async def test_flush_has_the_running_pipeline_write_its_buffers(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    state = tmp_path / "state.db"
    runtime = Runtime(state_path=state, plugins=firehose_plugins())
    runtime.add_resource("lake", "firehose", {"destination": DESTINATION})
    async with runtime:
        from plugins.firehose.target import FirehoseTarget

        target = runtime.resource("lake")
        assert isinstance(target, FirehoseTarget)
        await target.put([b"running"])
        process = await asyncio.create_subprocess_exec(
            *pipelines_command(),
            "firehose",
            "put",
            "lake",
            "from-cli",
            "--state",
            str(state),
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert await process.wait() == 0
        follower = await asyncio.create_subprocess_exec(
            *pipelines_command(),
            "firehose",
            "objects",
            "lake",
            "--follow",
            "--poll",
            "0.1",
            "--state",
            str(state),
            "--output",
            "jsonl",
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        process = await asyncio.create_subprocess_exec(
            *pipelines_command(),
            "firehose",
            "flush",
            "lake",
            "--state",
            str(state),
            "--output",
            "json",
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert json.loads(out) == {
            "DeliveryStreamName": "lake",
            "BufferedRecords": 0,
            "BufferedBytes": 0,
        }
        assert follower.stdout is not None
        seen = json.loads(await asyncio.wait_for(follower.stdout.readline(), 30))
        assert seen["Bucket"] == "lake" and seen["Key"].startswith("in/")
        assert Path(seen["Path"]).stat().st_size == seen["Size"]
        follower.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(follower.wait(), 10) == 0
    assert sorted(lines(objects(tmp_path / "buckets" / "lake"))) == [b"from-cli", b"running"]
    listed = cli(cli_env, "objects", "lake", "--state", str(state), "--output", "json")
    assert [item["Key"] for item in json.loads(listed.stdout)] == [seen["Key"]]


def test_flush_without_a_running_pipeline_says_so(tmp_path: Path, cli_env: dict[str, str]) -> None:
    state = tmp_path / "state.db"
    make_stream(state)
    result = cli(cli_env, "flush", "lake", "--timeout", "0.5", "--state", str(state), code=1)
    assert result.stderr == (
        "error: delivery stream lake was not flushed within 0.5 s: is its pipeline running?\n"
    )
    assert sys.executable  # the CLI ran as a subprocess of this interpreter's venv


def test_describe_and_put_for_an_http_endpoint_stream(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    state = tmp_path / "state.db"
    config = {
        "EndpointConfiguration": {"Url": "https://collector.example.com/in", "AccessKey": "k"},
        "S3Configuration": {"BucketARN": "arn:aws:s3:::backup", "RoleARN": "arn:aws:iam::1:role/r"},
    }

    async def made() -> None:
        async with await FirehoseStore.open(state) as store:
            request = {
                "DeliveryStreamType": "DirectPut",
                "HttpEndpointDestinationConfiguration": config,
            }
            await store.create("to-http", request, {}, made_by_api=True)

    asyncio.run(made())
    described = json.loads(
        cli(cli_env, "describe", "to-http", "--state", str(state), "--output", "json").stdout
    )
    http = described["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert http["EndpointConfiguration"] == {"Url": "https://collector.example.com/in"}
    assert http["BufferingHints"] == {"SizeInMBs": 5, "IntervalInSeconds": 300}  # AWS's defaults
    put = json.loads(
        cli(cli_env, "put", "to-http", "a", "bc", "--state", str(state), "--output", "json").stdout
    )
    assert put["FailedPutCount"] == 0

    async def buffered() -> list[bytes | None]:
        async with await FirehoseStore.open(state) as store:
            found = await store.chunks("to-http")
            return [stored.sizes for stored in await store.chunk_data([c.id for c in found])]

    # Each record's length is kept: the endpoint gets them one by one.
    (sizes,) = asyncio.run(buffered())
    assert sizes is not None and len(sizes) == 8
