"""``pipelines schemas ...`` and a pipeline's ``schemas`` resource in real
subprocesses: list, describe, export and codegen over a state database the
test seeds, discover over files of events, and ``pipelines validate``
locating a declaration's problems in the YAML."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipelines.schema import config_schema
from plugins.schemas.infer import DRAFT4, OPENAPI, discovered
from plugins.schemas.registry import Registry
from plugins.schemas.store import SchemaStore

from .helpers import run_cli
from .schemas_plugin import cli_env, schema_plugins
from .test_schemas_infer import ORDER


def cli(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, env=env)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"

    async def seed() -> None:
        async with await SchemaStore.open(path) as store:
            registry = Registry(store)
            await registry.create_registry("shop", "orders")
            content = json.dumps(discovered([ORDER], OPENAPI))
            await registry.create_schema("shop", "shop.orders@OrderPlaced", OPENAPI, content)
            await registry.update_schema("shop", "shop.orders@OrderPlaced", content=content)

    asyncio.run(seed())
    return path


def test_list_describe_export(env: dict[str, str], state: Path) -> None:
    listed = json.loads(
        cli(env, "schemas", "list", "--state", str(state), "--output", "json").stdout
    )
    assert [r["RegistryName"] for r in listed] == ["aws.events", "discovered-schemas", "shop"]
    schemas = json.loads(
        cli(env, "schemas", "list", "-r", "shop", "--state", str(state), "--output", "json").stdout
    )
    assert [(s["SchemaName"], s["VersionCount"]) for s in schemas] == [
        ("shop.orders@OrderPlaced", 2)
    ]
    described = json.loads(
        cli(
            env,
            "schemas",
            "describe",
            "shop",
            "shop.orders@OrderPlaced",
            "--version",
            "1",
            "--state",
            str(state),
            "--output",
            "json",
        ).stdout
    )
    assert described["SchemaVersion"] == "1"
    assert described["Content"]["info"]["title"] == "OrderPlaced"
    exported = json.loads(
        cli(
            env, "schemas", "export", "shop", "shop.orders@OrderPlaced", "--state", str(state)
        ).stdout
    )
    assert exported == discovered([ORDER], DRAFT4)
    missing = cli(env, "schemas", "describe", "shop", "nope", "--state", str(state), code=1)
    assert "NotFoundException: Schema with name nope does not exist." in missing.stderr
    absent = cli(env, "schemas", "list", "--state", str(state.with_name("none.db")), code=1)
    assert "does not exist" in absent.stderr
    assert not state.with_name("none.db").exists()


def test_codegen(env: dict[str, str], state: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = cli(
        env,
        "schemas",
        "codegen",
        "shop",
        "shop.orders@OrderPlaced",
        "--language",
        "Python36",
        "--out",
        str(out),
        "--state",
        str(state),
    )
    assert str(out / "schema/shop/orders/orderplaced/models.py") in done.stdout.splitlines()
    models = (out / "schema/shop/orders/orderplaced/models.py").read_text()
    assert "class AWSEvent:" in models and "class Customer:" in models
    # Without --out, the zip goes to standard output (a pipe here).
    raw = subprocess.run(
        [
            *run_cli.__globals__["pipelines_command"](),
            "schemas",
            "codegen",
            "shop",
            "shop.orders@OrderPlaced",
            "--language",
            "TypeScript3",
            "--state",
            str(state),
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    with zipfile.ZipFile(io.BytesIO(raw.stdout)) as archive:
        assert archive.namelist() == ["schema/shop/orders/orderplaced/index.ts"]


def test_discover(env: dict[str, str], tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    other = {**ORDER, "detail": {**ORDER["detail"], "coupon": "x"}}
    events.write_text(json.dumps(ORDER) + "\n\n" + json.dumps(other) + "\n")
    schema = json.loads(cli(env, "schemas", "discover", str(events)).stdout)
    detail = schema["components"]["schemas"]["OrderPlaced"]
    assert "coupon" in detail["properties"] and "coupon" not in detail["required"]
    draft4 = json.loads(
        cli(env, "schemas", "discover", "--type", "JSONSchemaDraft4", str(events)).stdout
    )
    assert draft4["$schema"] == "http://json-schema.org/draft-04/schema#"
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([ORDER, {**ORDER, "source": "other"}]))
    refused = cli(env, "schemas", "discover", str(mixed), code=1)
    assert "several source and detail-type" in refused.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ORDER) + "\n{oops\n")
    assert f"{broken}:2: not JSON" in cli(env, "schemas", "discover", str(broken), code=1).stderr


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_validate_locates_problems_of_a_declaration(env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pipeline.yaml",
        """\
schemas:
  registries:
    shop:
      schemas:
        shop@OrderPlaced:
          type: JSONSchemaDraft4
          content:
            type: object
            required: total
  require:
    - source: shop
      detail_type: Order Placed
      schema: shop
    - source: shop
      detail_type: Order Placed
      schema: shop/shop@OrderPlaced
      on_failure: bounce
""",
    )
    done = cli(env, "validate", str(config), code=1)
    lines = done.stdout.strip().splitlines() + done.stderr.strip().splitlines()
    assert (
        f"{config}:9:13: schemas.registries.shop.schemas.shop@OrderPlaced"
        ".content.required: not a valid JSONSchemaDraft4 schema: 'total' is not of type 'array'"
    ) in lines
    assert f"{config}:13:7: schemas.require[0].schema: is REGISTRY/SCHEMA, not 'shop'" in lines
    assert any(line.startswith(f"{config}:17:7: schemas.require[1].on_failure:") for line in lines)


def test_validate_finds_discoverers_and_requirements_on_missing_buses(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "pipeline.yaml",
        """\
buses: [orders]
schemas:
  discoverers: [orders, nowhere]
  require:
    - {bus: elsewhere, source: shop, detail_type: Order Placed, schema: shop/Order}
""",
    )
    done = cli(env, "validate", str(config), code=1)
    lines = done.stdout.strip().splitlines() + done.stderr.strip().splitlines()
    assert lines == [
        f"{config}:3:25: schemas.discoverers[1]: no bus 'nowhere' (declare it under buses)",
        f"{config}:5:8: schemas.require[0].bus: no bus 'elsewhere' (declare it under buses)",
    ]


def test_a_start_refused_for_a_missing_schema_says_where_the_file_asks_for_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    """``validate`` cannot know what the registry will hold (the API may fill
    it); the start can, and names the setting as the file writes it: in the
    ``schemas`` section, or on the rule that asks."""
    head = """\
state: state.db
resources:
  billing: {type: queue}
schemas:
  registries: {shop: {}}
"""
    rule = """\
rules:
  eu-orders:
    pattern: {source: [shop]}
    targets: [{id: billing, resource: billing}]
    require:
      source: shop
      detail_type: Order Placed
      schema: shop/shop@Nope
"""
    config = write_config(tmp_path / "pipeline.yaml", head + rule)
    cli(env, "validate", str(config))
    done = cli(env, "run", str(config), code=1)
    assert done.stderr.strip().splitlines() == [
        f"{config}:13:7: rules.eu-orders.require.schema: no schema shop@Nope in registry 'shop'"
    ]
    section = "  require:\n    - {source: shop, detail_type: Shipped, schema: shop/shop@Shipped}\n"
    write_config(config, head + section)
    done = cli(env, "run", str(config), code=1)
    assert done.stderr.strip().splitlines() == [
        f"{config}:7:44: schemas.require[0].schema: no schema shop@Shipped in registry 'shop'"
    ]


def test_a_pipeline_declares_its_schemas_and_validates(env: dict[str, str], tmp_path: Path) -> None:
    """A real runner: the declared schema is in the registry, a bad event is
    refused by PutEvents (the control socket's put), a good one is accepted."""
    config = write_config(
        tmp_path / "pipeline.yaml",
        """\
resources:
  schemas:
    type: schemas
    registries:
      shop:
        schemas:
          shop@OrderPlaced:
            content: {type: object, required: [detail], properties: {detail: {type: object, required: [total]}}}
    require:
      - {source: shop, detail_type: Order Placed, schema: shop/shop@OrderPlaced}
""",
    )
    runner = subprocess.Popen(
        [*run_cli.__globals__["pipelines_command"](), "run", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answers: list[Any] = []
        for detail in ('{"total": 1}', '{"count": 1}'):
            for _ in range(100):
                entry = json.dumps(
                    {"Source": "shop", "DetailType": "Order Placed", "Detail": detail}
                )
                done = run_cli("put", "--config", str(config), entry, env=env)
                if "FailedEntryCount" in done.stdout:
                    break
                time.sleep(0.1)  # the runner is still starting
            answers.append(done)
        assert answers[0].returncode == 0, answers[0].stderr
        assert answers[1].returncode != 0
        assert "SchemaValidationError" in answers[1].stdout + answers[1].stderr
        assert "$.detail: 'total' is a required property" in answers[1].stdout + answers[1].stderr
    finally:
        runner.terminate()
        runner.wait(timeout=30)
    listed = json.loads(
        cli(
            env, "schemas", "list", "-r", "shop", "--config", str(config), "--output", "json"
        ).stdout
    )
    assert [s["SchemaName"] for s in listed] == ["shop@OrderPlaced"]


def test_the_published_config_schema_describes_the_section() -> None:
    validator = jsonschema.Draft202012Validator(config_schema(schema_plugins()))
    good = {
        "schemas": {
            "registries": {"shop": {"schemas": {"shop@A": {"content": {"type": "object"}}}}},
            "discoverers": ["default"],
            "require": [{"source": "s", "detail_type": "A", "schema": "shop/shop@A"}],
        }
    }
    assert not list(validator.iter_errors(good))
    bad = {"schemas": {"require": [{"source": "s", "schema": "x", "on_failure": "drop"}]}}
    messages = sorted(e.message for e in validator.iter_errors(bad))
    assert any("'detail_type' is a required property" in m for m in messages), messages
