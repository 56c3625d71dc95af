"""A Distributed Map's ItemReader and ResultWriter over local directories.

The recorded cases run LocalStack's AWS-validated definitions (read from the
copy in tests/data/stepfunctions, as tests/test_states_conformance.py does) against a
local bucket holding the same file the recorded test put in S3, and compare
our history with AWS's; the others check what no recording shows.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.clock import ManualClock
from plugins.states import itemio
from plugins.states.definition import parse_definition, validate
from plugins.states.history import MemoryLog
from plugins.states.interpreter import Execution, Interpreter, Outcome
from tests import states_recordings as rec

Json = Any
SCEN = "v2/scenarios/test_base_scenarios.py"
ASSIGN = "v2/assign/test_assign_reference_variables.py"
FOLDER = "scenarios/statemachines"

# The files the recorded tests put in their bucket (values from their test modules).
CSV_FIRST_LINE = (
    "Col1,Col2,Col3\n"
    "Value1,Value2,Value3\n"
    "Value4,Value5,Value6\n"
    ",,,\n"
    "true,1,'HelloWorld'\n"
    "Null,None,\n"
    "   \n"
)
CSV_NO_HEADER = (
    "Value1,Value2,Value3\nValue4,Value5,Value6\n,,,\ntrue,1,'HelloWorld'\nNull,None,\n   \n"
)
CSV_TYPED_HEADERS = "0,True,{}\nValue4,Value5,Value6\n,,,\ntrue,1,'HelloWorld'\nNull,None,\n   \n"
CSV_SHORT_HEADER = "H1,\nValue4,Value5,Value6\n,,,\ntrue,1,'HelloWorld'\nNull,None,\n   \n"
CSV_FOUR_ROWS = "Col1,Col2\nValue1,Value2\nValue3,Value4\nValue5,Value6\nValue7,Value8\n"
STATEMENTS = [
    {"verdict": "true", "statement_date": "6/11/2008", "statement_source": "speech"},
    {"verdict": "false", "statement_date": "6/7/2022", "statement_source": "television"},
    {"verdict": "mostly-true", "statement_date": "5/18/2016", "statement_source": "news"},
]
FOUR_STATEMENTS = [
    *STATEMENTS,
    {"verdict": "false", "statement_date": "5/18/2024", "statement_source": "x"},
]


@dataclass(frozen=True)
class Case:
    module: str
    test: str
    template: str
    #: the bucket's files: key -> text
    files: dict[str, str]
    patch: Callable[[Json], Json] | None = None
    bucket: str = "bucket-name"
    #: our output made comparable to a recording normalised by its test
    normalise: Callable[[list[dict[str, Json]]], list[dict[str, Json]]] | None = None

    @property
    def id(self) -> str:
        return self.test.split("::")[-1]

    def definition(self) -> Json:
        loaded = rec.template(self.template)
        return self.patch(copy.deepcopy(loaded)) if self.patch else loaded


def _reader(field: str, value: Json) -> Callable[[Json], Json]:
    return lambda d: rec.set_at(
        d, ["States", "MapState", "ItemReader", "ReaderConfig", field], value
    )


def _listing_normalised(events: list[dict[str, Json]]) -> list[dict[str, Json]]:
    """ListObjectsV2's items as the recorded test normalised them (Etag, LastModified)."""
    out = [dict(event) for event in events]
    for event, key, field in (
        (out[-2], "stateExitedEventDetails", "output"),
        (out[-1], "executionSucceededEventDetails", "output"),
    ):
        items = json.loads(event[key][field])
        items = sorted(
            (
                {
                    "Etag": f"<Etag-{item['Key']}>",
                    "LastModified": "<date>",
                    "Key": item["Key"],
                    "Size": item["Size"],
                    "StorageClass": item["StorageClass"],
                }
                for item in items
            ),
            key=lambda item: item["Key"],
        )
        event[key] = {**event[key], field: json.dumps(items)}
    return out


S = "TestBaseScenarios::"
CASES = [
    Case(
        SCEN,
        S + "test_map_item_reader_base_csv_headers_first_line",
        f"{FOLDER}/map_item_reader_base_csv_headers_first_line.json5",
        {"file.csv": CSV_FIRST_LINE},
    ),
    *[
        Case(
            SCEN,
            S + f"test_map_item_reader_csv_max_items[{most}]",
            f"{FOLDER}/map_item_reader_base_csv_max_items.json5",
            {"file.csv": CSV_FOUR_ROWS},
            patch=_reader("MaxItems", most),
        )
        for most in (0, 2, 100_000_000)
    ],
    *[
        Case(
            SCEN,
            S + f"test_map_item_reader_csv_max_items_paths[{most}]",
            f"{FOLDER}/map_item_reader_base_csv_max_items_path.json5",
            {"file.csv": CSV_FOUR_ROWS},
        )
        for most in ("-1", "0", "1.5", "2", "100000000", "100000001")
    ],
    Case(
        SCEN,
        S + "test_map_item_reader_base_json_max_items_jsonata",
        f"{FOLDER}/map_item_reader_base_json_max_items_jsonata.json5",
        {"file.json": json.dumps(STATEMENTS)},
    ),
    *[
        Case(
            SCEN,
            S + f"test_map_item_reader_{name}",
            f"{FOLDER}/map_item_reader_base_csv_headers_decl.json5",
            {"file.csv": CSV_NO_HEADER},
            patch=_reader("CSVHeaders", headers),
        )
        for name, headers in (
            ("base_csv_headers_decl", ["H1", "H2", "H3"]),
            ("csv_headers_decl_duplicate_headers", ["H1", "H1", "H3"]),
            ("csv_headers_decl_extra_fields", ["H1"]),
        )
    ],
    Case(
        SCEN,
        S + "test_map_item_reader_csv_headers_first_row_typed_headers",
        f"{FOLDER}/map_item_reader_base_csv_headers_first_line.json5",
        {"file.csv": CSV_TYPED_HEADERS},
    ),
    Case(
        SCEN,
        S + "test_map_item_reader_csv_first_row_extra_fields",
        f"{FOLDER}/map_item_reader_base_csv_headers_first_line.json5",
        {"file.csv": CSV_SHORT_HEADER},
    ),
    Case(
        SCEN,
        S + "test_map_item_reader_base_json",
        f"{FOLDER}/map_item_reader_base_json.json5",
        {"file.json": json.dumps(STATEMENTS)},
    ),
    *[
        Case(
            SCEN,
            S + f"test_map_item_reader_base_json_with_items_path[{name}]",
            f"{FOLDER}/map_item_reader_base_json_with_items_path.json5",
            {"file.json": json.dumps([["from-bucket-item-0"]])},
            patch=lambda d, path=path: rec.set_at(d, ["States", "MapState", "ItemsPath"], path),  # type: ignore[misc]
        )
        for name, path in (
            ("VALID_ITEMS_PATH_FROM_PREVIOUS", "$.from_previous"),
            ("VALID_ITEMS_PATH_FROM_ITEM_READER", "$[0]"),
            ("INVALID_ITEMS_PATH", "$.no_such_path_in_bucket_result"),
        )
    ],
    Case(
        SCEN,
        S + "test_map_item_batching_base_json_max_per_batch_jsonata",
        f"{FOLDER}/map_item_batcher_base_max_per_batch_jsonata.json5",
        {"file.json": json.dumps(STATEMENTS)},
    ),
    Case(
        SCEN,
        S + "test_map_item_reader_json_no_json_list_object",
        f"{FOLDER}/map_item_reader_base_json.json5",
        {"file.json": json.dumps({"Hello": "world"})},
    ),
    Case(
        SCEN,
        S + "test_map_item_reader_base_json_max_items",
        f"{FOLDER}/map_item_reader_base_json_max_items.json5",
        {"file.json": json.dumps([STATEMENTS[0]] * 3)},
    ),
    Case(
        SCEN,
        S + "test_map_item_reader_base_list_objects_v2",
        f"{FOLDER}/map_item_reader_base_list_objects_v2.json5",
        {f"file_{i}.txt": f"{i}HelloWorld!" for i in range(3)},
        bucket="bucket_name",
        normalise=_listing_normalised,
    ),
    Case(
        SCEN,
        S + "test_map_state_result_writer",
        f"{FOLDER}/map_state_result_writer.json5",
        {},
        bucket="result-bucket",
    ),
    *[
        Case(
            ASSIGN,
            f"TestAssignReferenceVariables::test_reference_in_map_state_max_items_path[{name}]",
            f"assign/statemachines/{name.lower()}.json5",
            {"file.json": json.dumps(FOUR_STATEMENTS)},
        )
        for name in (
            "MAP_STATE_REFERENCE_IN_MAX_ITEMS_PATH",
            "MAP_STATE_REFERENCE_IN_MAX_PER_BATCH_PATH",
        )
    ],
]


async def _run(
    definition: Json, input_text: str, buckets: itemio.ItemSource, clock: ManualClock
) -> tuple[Outcome, MemoryLog]:
    machine = parse_definition(definition)
    region, account, name, machine_name = "us-east-1", "111111111111", "execution", "machine"
    execution = Execution(
        arn=f"arn:aws:states:{region}:{account}:execution:{machine_name}:{name}",
        name=name,
        state_machine_arn=f"arn:aws:states:{region}:{account}:stateMachine:{machine_name}",
        state_machine_name=machine_name,
        input_text=input_text,
        role_arn="arn:aws:iam::111111111111:role/snf-role",
        start_time=clock.time(),
    )
    log = MemoryLog()
    interpreter = Interpreter(machine, log=log, clock=clock, items=buckets)
    outcome = await rec.drive(clock, interpreter.run(execution))
    return outcome, log


def _bucket(root: Path, name: str, files: dict[str, str]) -> itemio.LocalBuckets:
    directory = root / name
    directory.mkdir()
    for key, text in files.items():
        (directory / key).write_text(text)
    return itemio.LocalBuckets({name: directory})


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_recorded_item_reader(case: Case, tmp_path: Path) -> None:
    rec.require_recordings()
    content = rec.recording(case.module, case.test)
    recorded = content["get_execution_history"]["events"]
    if rec.before_map_run_change(rec.recording_date(case.module, case.test)):
        recorded = rec.map_run_exit_as_since_november_2024(recorded)
    buckets = _bucket(tmp_path, case.bucket, case.files)
    clock = ManualClock(start=1_700_000_000.0)
    outcome, log = await _run(case.definition(), rec.recorded_input(recorded), buckets, clock)
    ours = [event.to_aws() for event in log.events]
    if case.normalise is not None and outcome.status == "SUCCEEDED":
        ours = case.normalise(ours)
    problems = rec.history_differences(recorded, ours)
    assert not problems, "\n".join(problems[:20])


# -- what no recording shows ------------------------------------------------------------


def _distributed(reader: Json, **more: Json) -> Json:
    return {
        "StartAt": "MapState",
        "States": {
            "MapState": {
                "Type": "Map",
                "ItemReader": reader,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "End": True}},
                },
                "End": True,
                **more,
            }
        },
    }


def _get(input_type: str, **config: Json) -> Json:
    return {
        "Resource": itemio.GET_OBJECT,
        "ReaderConfig": {"InputType": input_type, **config},
        "Parameters": {"Bucket": "data", "Key.$": "$.key"},
    }


async def _outcome(definition: Json, buckets: itemio.ItemSource, given: Json) -> Outcome:
    clock = ManualClock(start=1_700_000_000.0)
    outcome, _ = await _run(definition, json.dumps(given), buckets, clock)
    return outcome


async def test_jsonl_and_delimited_csv_files(tmp_path: Path) -> None:
    buckets = _bucket(
        tmp_path,
        "data",
        {"rows.jsonl": '{"a": 1}\n\n[2]\n"three"\n', "rows.psv": "x|y\n1|2\n"},
    )
    jsonl = await _outcome(_distributed(_get("JSONL")), buckets, {"key": "rows.jsonl"})
    assert jsonl.output == [{"a": 1}, [2], "three"]
    piped = await _outcome(
        _distributed(_get("CSV", CSVDelimiter="PIPE")), buckets, {"key": "rows.psv"}
    )
    assert piped.output == [{"x": "1", "y": "2"}]
    broken = _bucket(tmp_path, "bad", {"rows.jsonl": '{"a": 1}\n{nope\n'})
    failed = await _outcome(
        _distributed({**_get("JSONL"), "Parameters": {"Bucket": "bad", "Key": "rows.jsonl"}}),
        buckets if False else broken,
        {},
    )
    assert (failed.status, failed.error) == ("FAILED", "States.ItemReaderFailed")
    assert failed.cause is not None and failed.cause.startswith("Line 2 is not valid JSON")


async def test_a_missing_object_or_bucket_fails_the_reader_and_can_be_caught(
    tmp_path: Path,
) -> None:
    buckets = _bucket(tmp_path, "data", {})
    missing = await _outcome(_distributed(_get("JSON")), buckets, {"key": "nope.json"})
    assert (missing.status, missing.error) == ("FAILED", "States.ItemReaderFailed")
    assert missing.cause is not None and "The specified key does not exist" in missing.cause
    escaping = await _outcome(_distributed(_get("JSON")), buckets, {"key": "../x.json"})
    assert escaping.cause == "the key '../x.json' does not name a file inside its bucket"
    caught = _distributed(
        {**_get("JSON"), "Parameters": {"Bucket": "elsewhere", "Key": "k"}},
        Catch=[{"ErrorEquals": ["States.ItemReaderFailed"], "Next": "Caught"}],
    )
    caught["States"]["MapState"].pop("End")
    caught["States"]["MapState"]["Next"] = "Done"
    caught["States"]["Caught"] = {"Type": "Pass", "End": True}
    caught["States"]["Done"] = {"Type": "Succeed"}
    outcome = await _outcome(caught, buckets, {})
    assert outcome.status == "SUCCEEDED"
    assert outcome.output == {
        "Error": "States.ItemReaderFailed",
        "Cause": "no bucket named 'elsewhere' in this runtime",
    }


async def test_reader_items_go_through_selector_batcher_and_tolerated_failures(
    tmp_path: Path,
) -> None:
    numbers = [{"n": n} for n in range(10)]
    buckets = _bucket(tmp_path, "data", {"n.json": json.dumps(numbers)})
    batched = _distributed(
        _get("JSON", MaxItems=5),
        ItemSelector={"value.$": "$$.Map.Item.Value.n", "index.$": "$$.Map.Item.Index"},
        ItemBatcher={"MaxItemsPerBatch": 2, "BatchInput": {"tag": "t"}},
    )
    outcome = await _outcome(batched, buckets, {"key": "n.json"})
    assert outcome.output == [
        {"BatchInput": {"tag": "t"}, "Items": [{"value": 0, "index": 0}, {"value": 1, "index": 1}]},
        {"BatchInput": {"tag": "t"}, "Items": [{"value": 2, "index": 2}, {"value": 3, "index": 3}]},
        {"BatchInput": {"tag": "t"}, "Items": [{"value": 4, "index": 4}]},
    ]
    failing = _distributed(_get("JSON"), ToleratedFailureCount=3)
    failing["States"]["MapState"]["ItemProcessor"]["States"] = {
        "P": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericLessThan": 3, "Next": "Fail"}],
            "Default": "Ok",
        },
        "Fail": {"Type": "Fail", "Error": "Low", "Cause": "too low"},
        "Ok": {"Type": "Pass", "End": True},
    }
    tolerated = await _outcome(failing, buckets, {"key": "n.json"})
    assert tolerated.status == "SUCCEEDED"
    assert tolerated.output[:3] == [{"Error": "Low", "Cause": "too low"}] * 3
    failing["States"]["MapState"]["ToleratedFailureCount"] = 2
    exceeded = await _outcome(failing, buckets, {"key": "n.json"})
    assert exceeded.error == "States.ExceedToleratedFailureThreshold"


async def test_manifest_reads_an_inventory_reports_csv_files(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    (inventory / "data").mkdir(parents=True)
    (inventory / "data" / "part-1.csv.gz").write_bytes(
        gzip.compress(b'"src","a.txt","12"\n"src","b/c.txt","7"\n')
    )
    manifest = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inventory",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "data/part-1.csv.gz", "size": 40, "MD5checksum": "x"}],
    }
    (inventory / "manifest.json").write_text(json.dumps(manifest))
    buckets = itemio.LocalBuckets({"inventory": inventory})
    reader = {
        "Resource": itemio.GET_OBJECT,
        "ReaderConfig": {"InputType": "MANIFEST"},
        "Parameters": {"Bucket": "inventory", "Key": "manifest.json"},
    }
    outcome = await _outcome(_distributed(reader), buckets, {})
    assert outcome.output == [
        {"Bucket": "src", "Key": "a.txt", "Size": "12"},
        {"Bucket": "src", "Key": "b/c.txt", "Size": "7"},
    ]


async def test_listing_reads_keys_under_a_prefix_in_key_order(tmp_path: Path) -> None:
    buckets = _bucket(tmp_path, "data", {})
    (tmp_path / "data" / "logs" / "b").mkdir(parents=True)
    (tmp_path / "data" / "logs" / "b" / "2.txt").write_text("two")
    (tmp_path / "data" / "logs" / "1.txt").write_text("1")
    (tmp_path / "data" / "other.txt").write_text("x")
    reader = {
        "Resource": itemio.LIST_OBJECTS,
        "Parameters": {"Bucket": "data", "Prefix": "logs/"},
    }
    outcome = await _outcome(_distributed(reader), buckets, {})
    assert [(item["Key"], item["Size"]) for item in outcome.output] == [
        ("logs/1.txt", 1),
        ("logs/b/2.txt", 3),
    ]
    assert outcome.output[0]["Etag"] == '"c4ca4238a0b923820dcc509a6f75849b"'  # md5("1")
    assert outcome.output[0]["StorageClass"] == "STANDARD"


async def test_result_writer_exports_manifest_and_result_files(tmp_path: Path) -> None:
    buckets = _bucket(tmp_path, "results", {})
    definition = {
        "StartAt": "MapState",
        "States": {
            "MapState": {
                "Type": "Map",
                "ToleratedFailurePercentage": 50,
                "Label": "Shout",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Check",
                    "States": {
                        "Check": {
                            "Type": "Choice",
                            "Choices": [{"Variable": "$", "StringEquals": "bad", "Next": "No"}],
                            "Default": "Yes",
                        },
                        "No": {"Type": "Fail", "Error": "Bad", "Cause": "a bad item"},
                        "Yes": {"Type": "Pass", "Parameters": {"said.$": "$"}, "End": True},
                    },
                },
                "ResultWriter": {
                    "Resource": itemio.PUT_OBJECT,
                    "Parameters": {"Bucket": "results", "Prefix": "jobs"},
                },
                "End": True,
            }
        },
    }
    outcome = await _outcome(definition, buckets, ["hi", "bad", "ho"])
    assert outcome.status == "SUCCEEDED", outcome
    run_arn = outcome.output["MapRunArn"]
    run_id = run_arn.rsplit(":", 1)[1]
    assert run_arn.startswith("arn:aws:states:us-east-1:111111111111:mapRun:machine/Shout:")
    key = f"jobs/{run_id}/manifest.json"
    assert outcome.output["ResultWriterDetails"] == {"Bucket": "results", "Key": key}
    folder = tmp_path / "results" / "jobs" / run_id
    manifest = json.loads((folder / "manifest.json").read_text())
    succeeded = json.loads((folder / "SUCCEEDED_0.json").read_text())
    failed = json.loads((folder / "FAILED_0.json").read_text())
    assert manifest == {
        "DestinationBucket": "results",
        "MapRunArn": run_arn,
        "ResultFiles": {
            "FAILED": [
                {
                    "Key": f"jobs/{run_id}/FAILED_0.json",
                    "Size": (folder / "FAILED_0.json").stat().st_size,
                }
            ],
            "PENDING": [],
            "SUCCEEDED": [
                {
                    "Key": f"jobs/{run_id}/SUCCEEDED_0.json",
                    "Size": (folder / "SUCCEEDED_0.json").stat().st_size,
                }
            ],
        },
    }
    assert [(r["Input"], r["Output"], r["Status"]) for r in succeeded] == [
        ('"hi"', '{"said":"hi"}', "SUCCEEDED"),
        ('"ho"', '{"said":"ho"}', "SUCCEEDED"),
    ]
    assert succeeded[0]["ExecutionArn"].startswith(
        "arn:aws:states:us-east-1:111111111111:execution:machine/Shout:"
    )
    assert (
        succeeded[0]["StateMachineArn"]
        == "arn:aws:states:us-east-1:111111111111:stateMachine:machine/Shout"
    )
    assert [(r["Input"], r["Error"], r["Cause"], r["Status"]) for r in failed] == [
        ('"bad"', "Bad", "a bad item", "FAILED")
    ]


async def test_writer_config_alone_transforms_the_output(tmp_path: Path) -> None:
    definition = {
        "StartAt": "MapState",
        "States": {
            "MapState": {
                "Type": "Map",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "Twice",
                    "States": {
                        "Twice": {
                            "Type": "Pass",
                            "Parameters": {"v.$": "States.Array($, $)"},
                            "OutputPath": "$.v",
                            "End": True,
                        }
                    },
                },
                "ResultWriter": {"WriterConfig": {"Transformation": "FLATTEN"}},
                "End": True,
            }
        },
    }
    outcome = await _outcome(definition, itemio.NoItemSource(), [1, 2])
    assert outcome.output == [1, 1, 2, 2]
    definition["States"]["MapState"]["ResultWriter"] = {"WriterConfig": {"Transformation": "NONE"}}
    records = (await _outcome(definition, itemio.NoItemSource(), [1])).output
    assert [(r["Input"], r["Output"], r["Status"]) for r in records] == [
        ("1", "[1,1]", "SUCCEEDED")
    ]


async def test_an_unwritable_bucket_fails_with_result_writer_failed(tmp_path: Path) -> None:
    definition = {
        "StartAt": "MapState",
        "States": {
            "MapState": {
                "Type": "Map",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "End": True}},
                },
                "ResultWriter": {
                    "Resource": itemio.PUT_OBJECT,
                    "Parameters": {"Bucket": "nowhere", "Prefix": "p"},
                },
                "End": True,
            }
        },
    }
    clock = ManualClock(start=1_700_000_000.0)
    outcome, log = await _run(definition, "[1]", itemio.NoItemSource(), clock)
    assert (outcome.error, outcome.cause) == (
        "States.ResultWriterFailed",
        "no bucket named 'nowhere' in this runtime",
    )
    types = [event.type for event in log.events]
    assert types[-3:] == ["MapRunFailed", "MapStateFailed", "ExecutionFailed"]


def test_reader_and_writer_definitions_are_checked() -> None:
    def problems(
        reader: Json, mode: str = "DISTRIBUTED", **more: Json
    ) -> list[tuple[str, str | None]]:
        definition = _distributed(reader, **more)
        definition["States"]["MapState"]["ItemProcessor"]["ProcessorConfig"]["Mode"] = mode
        return [(error.message, error.location) for error in validate(definition)]

    assert problems(_get("JSON")) == []
    at = "/States/MapState/ItemReader"
    assert problems({**_get("JSON"), "ReaderConfig": {"InputType": "XML"}}) == [
        (
            "The field 'InputType' should have one of these values: [CSV, JSON, JSONL, MANIFEST]",
            f"{at}/ReaderConfig/InputType",
        )
    ]
    assert problems(_get("CSV", CSVHeaderLocation="GIVEN")) == [
        ("These fields are required: [CSVHeaders]", f"{at}/ReaderConfig")
    ]
    assert problems(_get("JSON", MaxItems=-1)) == [
        (
            "The value for the field 'MaxItems' must be between 0 and 100000000",
            f"{at}/ReaderConfig/MaxItems",
        )
    ]
    assert problems(_get("JSON"), mode="INLINE") == [
        ("The field 'ItemReader' is only supported in DISTRIBUTED mode", at)
    ]
    assert problems(
        _get("JSON"), ResultWriter={"Resource": "arn:aws:states:::s3:getObject", "Parameters": {}}
    ) == [
        (
            "The field 'Resource' should have the value 'arn:aws:states:::s3:putObject'",
            "/States/MapState/ResultWriter/Resource",
        )
    ]


# -- in a runtime: bucket resources --------------------------------------------------------


def _exporting(reader_config: Json, parameters: Json) -> Json:
    """A Distributed Map over the object ``parameters`` name (read by
    ``reader_config``), each item passed, results written to bucket
    ``results`` under ``runs``."""
    return {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": reader_config,
                    "Parameters": parameters,
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "End": True}},
                },
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": "results", "Prefix": "runs"},
                },
                "End": True,
            }
        },
    }


def _plugins(manager: Any) -> Any:
    """``manager`` with the bucket plugin (registered here until the venv is
    reinstalled with its entry point)."""
    import plugins.bucket

    if manager.get_plugin("bucket") is None and not manager.is_registered(plugins.bucket):
        manager.register(plugins.bucket, name="bucket")
    return manager


async def test_a_runtimes_buckets_serve_readers_and_writers(
    tmp_path: Path, state_location: str
) -> None:
    import asyncio

    from pipelines.config import build_runtime, load_config
    from plugins.states.executions import executions_of
    from tests.recorder import plugin_manager

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders.csv").write_text("id;qty\n1;2\n2;5\n")
    definition = _exporting(
        {"InputType": "CSV", "CSVDelimiter": "SEMICOLON"},
        {"Bucket": "amzn-s3-demo-bucket", "Key.$": "$.key"},
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        f"""resources:
  source: {{type: bucket, directory: in, bucket: amzn-s3-demo-bucket}}
  results: {{type: bucket, directory: out}}
  flow: {{type: state_machine, definition: {json.dumps(json.dumps(definition))}}}
"""
    )
    runtime = await build_runtime(
        load_config([path]), state_path=state_location, plugins=_plugins(plugin_manager())
    )
    async with runtime:
        engine = executions_of(runtime)
        started = await engine.start_execution("flow", '{"key": "orders.csv"}')
        record = await asyncio.wait_for(engine.wait_for(started["executionArn"]), 10)
        assert record.status == "SUCCEEDED", record
        output = json.loads(record.output or "")
    key = output["ResultWriterDetails"]["Key"]
    manifest = json.loads((tmp_path / "out" / key).read_text())
    succeeded = manifest["ResultFiles"]["SUCCEEDED"][0]["Key"]
    rows = json.loads((tmp_path / "out" / succeeded).read_text())
    assert [json.loads(row["Output"]) for row in rows] == [
        {"id": "1", "qty": "2"},
        {"id": "2", "qty": "5"},
    ]


async def test_bucket_settings_are_checked_where_they_are_written(tmp_path: Path) -> None:
    from pipelines.config import build_runtime, load_config
    from pipelines.errors import ConfigInvalid
    from tests.recorder import plugin_manager

    path = tmp_path / "pipeline.yaml"
    path.write_text(
        """resources:
  data: {type: bucket, directory: d, bucket: Not_A_Bucket}
  other: {type: bucket}
"""
    )
    with pytest.raises(ConfigInvalid) as raised:
        await build_runtime(
            load_config([path]), state_path=None, plugins=_plugins(plugin_manager())
        )
    lines = [str(problem) for problem in raised.value.problems]
    assert any(":2:" in line and "Not_A_Bucket" in line for line in lines), lines
    assert any(":3:" in line and "directory" in line for line in lines), lines
    path.write_text(
        """resources:
  data: {type: bucket, directory: d}
rules:
  r:
    pattern: {source: [x]}
    targets: [{id: t, resource: data}]
"""
    )
    with pytest.raises(ConfigInvalid) as raised:
        await build_runtime(
            load_config([path]), state_path=None, plugins=_plugins(plugin_manager())
        )
    lines = [str(problem) for problem in raised.value.problems]
    assert any(":6:" in line and "is a bucket" in line for line in lines), lines


async def test_a_queue_reader_deletes_the_messages_of_iterations_that_succeeded(
    tmp_path: Path, state_location: str
) -> None:
    import asyncio

    from pipelines.config import build_runtime, load_config
    from plugins.queue.target import QueueTarget
    from plugins.states.executions import executions_of
    from tests.recorder import plugin_manager

    definition = {
        "StartAt": "Drain",
        "States": {
            "Drain": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::sqs:receiveMessage",
                    "ReaderConfig": {"MaxItems": 4},
                    "Parameters": {
                        "QueueUrl": "http://127.0.0.1:4010/000000000000/work",
                        "VisibilityTimeout": 0,
                    },
                },
                "ItemSelector": {"body.$": "$$.Map.Item.Value.Body"},
                "ToleratedFailureCount": 5,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "Check",
                    "States": {
                        "Check": {
                            "Type": "Choice",
                            "Choices": [
                                {"Variable": "$.body", "StringEquals": "bad", "Next": "No"}
                            ],
                            "Default": "Yes",
                        },
                        "No": {"Type": "Fail", "Error": "Bad"},
                        "Yes": {"Type": "Pass", "End": True},
                    },
                },
                "End": True,
            }
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        f"""resources:
  work: {{type: queue}}
  flow: {{type: state_machine, definition: {json.dumps(json.dumps(definition))}}}
"""
    )
    runtime = await build_runtime(
        load_config([path]), state_path=state_location, plugins=_plugins(plugin_manager())
    )
    async with runtime:
        queue = runtime.resource("work")
        assert isinstance(queue, QueueTarget) and queue.store is not None
        for body in ("a", "bad", "b", "c", "later"):
            await queue.store.send("work", body, {})
        engine = executions_of(runtime)
        started = await engine.start_execution("flow", "{}")
        record = await asyncio.wait_for(engine.wait_for(started["executionArn"]), 10)
        assert record.status == "SUCCEEDED", record
        output = json.loads(record.output or "")
        assert [item.get("body", item.get("Error")) for item in output] == ["a", "Bad", "b", "c"]
        left = await queue.store.receive("work", 10, wait_time=0)
        assert sorted(message.body for message in left) == ["bad", "later"]


def test_pipelines_test_reads_a_buckets_file(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "orders.jsonl").write_text('{"order": 1}\n{"order": 2}\n')
    flow = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "MaxConcurrency": 1,  # the messages in the file's order
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSONL"},
                    "Parameters": {"Bucket": "orders-bucket", "Key.$": "$.key"},
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "Send",
                    "States": {
                        "Send": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::sqs:sendMessage",
                            "Parameters": {"QueueUrl": "done", "MessageBody.$": "$"},
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    (tmp_path / "flow.asl.json").write_text(json.dumps(flow))
    (tmp_path / "pipeline.yaml").write_text(
        """resources:
  orders: {type: bucket, directory: data, bucket: orders-bucket}
  done: {type: queue}
  flow: {type: state_machine, definition_file: flow.asl.json}
rules:
  go:
    pattern: {source: [shop]}
    targets: [{id: flow, resource: flow, input_path: $.detail}]
"""
    )
    test = tmp_path / "flow.test.yaml"
    test.write_text(
        """config: pipeline.yaml
tests:
  - name: each line is sent
    input: [{Source: shop, DetailType: go, Detail: {key: orders.jsonl}}]
    expect:
      done: [{pattern: {order: [1]}}, {pattern: {order: [2]}}]
"""
    )
    done = run_cli("test", str(test))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{test}::each line is sent PASSED" in done.stdout.splitlines()


async def test_a_bucket_no_resource_declares_is_under_the_state_directory(
    tmp_path: Path, state_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An AWS definition runs unchanged without declaring its buckets: they
    # are <state dir>/buckets/<name> (./buckets beside a PostgreSQL state).
    import asyncio

    from pipelines.runtime import Runtime
    from plugins.states.executions import executions_of
    from tests.recorder import plugin_manager

    monkeypatch.chdir(tmp_path)  # the state file is in tmp_path too
    runtime = Runtime(state_path=state_location, plugins=_plugins(plugin_manager()))
    root = tmp_path / "buckets"
    (root / "amzn-s3-demo-bucket").mkdir(parents=True)
    (root / "amzn-s3-demo-bucket" / "items.json").write_text("[1, 2]")
    definition = _exporting(
        {"InputType": "JSON"}, {"Bucket": "amzn-s3-demo-bucket", "Key": "items.json"}
    )
    runtime.add_resource("flow", "state_machine", {"definition": json.dumps(definition)})
    async with runtime:
        engine = executions_of(runtime)
        started = await engine.start_execution("flow", "{}")
        record = await asyncio.wait_for(engine.wait_for(started["executionArn"]), 10)
        assert record.status == "SUCCEEDED", record
        key = json.loads(record.output or "")["ResultWriterDetails"]["Key"]
    manifest = json.loads((root / "results" / key).read_text())
    written = manifest["ResultFiles"]["SUCCEEDED"][0]["Key"]
    rows = json.loads((root / "results" / written).read_text())
    assert [json.loads(row["Output"]) for row in rows] == [1, 2]
