"""Code bindings made from schemas: the Python passes ``mypy --strict``,
imports and turns events into typed classes and back; the TypeScript passes
``tsc --strict`` (TypeScript from npm: .ci/run installs it under .ci/node;
without it, and outside CI, that test is skipped)."""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from plugins.schemas.codegen import PYTHON, TYPESCRIPT, binding_zip, package_path
from plugins.schemas.infer import DRAFT4, OPENAPI, discovered

from .test_schemas_infer import ORDER

ROOT = Path(__file__).resolve().parent.parent

DETAIL_ONLY = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "title": "Refund Issued",
    "type": "object",
    "required": ["refundId", "amount", "class"],
    "properties": {
        "refundId": {"type": "string"},
        "amount": {"type": "number"},
        "count": {"type": "integer"},
        "class": {"type": "string"},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "by": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "flags": {"type": "object"}},
        },
        "extra": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    },
}

CASES = [
    ("shop.orders@OrderPlaced", OPENAPI, discovered([ORDER], OPENAPI), ORDER),
    (
        "shop@RefundIssued",
        DRAFT4,
        DETAIL_ONLY,
        {
            **ORDER,
            "detail-type": "Refund Issued",
            "detail": {
                "refundId": "r",
                "amount": 1,
                "class": "full",
                "reasons": ["late"],
                "by": {"name": "Ada", "flags": {"x": 1}},
                "extra": 3,
            },
        },
    ),
]


def unpack(language: str, name: str, kind: str, schema: Any, into: Path) -> Path:
    made = binding_zip(language, name, kind, json.dumps(schema))
    with zipfile.ZipFile(io.BytesIO(made)) as archive:
        archive.extractall(into)
    return into / package_path(name)


@pytest.mark.parametrize(("name", "kind", "schema", "event"), CASES)
def test_python_bindings_type_check_and_round_trip(
    tmp_path: Path, name: str, kind: str, schema: Any, event: dict[str, Any]
) -> None:
    package = unpack(PYTHON, name, kind, schema, tmp_path)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(package)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        module_name = ".".join(package.relative_to(tmp_path).parts)
        binding = importlib.import_module(module_name)
        typed = binding.unmarshall(json.dumps(event))
        assert type(typed).__name__ == "AWSEvent"
        assert typed.detail_type == event["detail-type"]
        assert binding.marshall(typed) == json.loads(json.dumps(event))
    finally:
        sys.path.remove(str(tmp_path))
        for loaded in [m for m in sys.modules if m == "schema" or m.startswith("schema.")]:
            del sys.modules[loaded]


def test_python_binding_names_fields_in_python() -> None:
    made = binding_zip(PYTHON, "shop@RefundIssued", DRAFT4, json.dumps(DETAIL_ONLY))
    with zipfile.ZipFile(io.BytesIO(made)) as archive:
        models = archive.read("schema/shop/refundissued/models.py").decode()
    assert "class RefundIssued:" in models
    assert "    refund_id: str\n" in models
    assert "    class_: str\n" in models  # a keyword
    assert "    count: int | None = None\n" in models
    assert "    detail: RefundIssued\n" in models
    assert "    extra: Any | None = None\n" in models


def tsc() -> str | None:
    found = os.environ.get("PIPELINES_TSC") or shutil.which("tsc")
    local = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "tsc"
    return found or (str(local) if local.exists() else None)


@pytest.mark.parametrize(("name", "kind", "schema", "event"), CASES)
def test_typescript_bindings_compile(
    tmp_path: Path, name: str, kind: str, schema: Any, event: dict[str, Any]
) -> None:
    compiler = tsc()
    if compiler is None:
        if os.environ.get("CI"):
            pytest.fail("tsc is missing: .ci/run installs TypeScript under .ci/node")
        pytest.skip("no tsc (npm install --prefix .ci/node typescript)")
    package = unpack(TYPESCRIPT, name, kind, schema, tmp_path)
    use = package / "use.ts"
    use.write_text(
        'import { AWSEvent, Marshaller } from "./index";\n'
        f"const event: AWSEvent = Marshaller.unmarshal({json.dumps(json.dumps(event))});\n"
        'const kind: string = event["detail-type"];\n'
        "const text: string = Marshaller.marshal(event);\n"
        "console.log(kind, text.length);\n"
    )
    compiled = subprocess.run(
        [compiler, "--strict", "--noEmit", "--target", "es2020", str(use)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
