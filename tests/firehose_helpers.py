"""What the firehose tests share: the plugins registered directly (as an
installed one would be through its entry point), objects read back from a
bucket directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

import plugins.bucket
import plugins.firehose
from plugins.firehose.formats import decompress

from .recorder import plugin_manager


def firehose_plugins() -> pluggy.PluginManager:
    manager = plugin_manager()
    # Until the venv is reinstalled the bucket plugin has no entry point yet.
    for name, plugin in (("firehose", plugins.firehose), ("bucket", plugins.bucket)):
        if manager.get_plugin(name) is None and not manager.is_registered(plugin):
            manager.register(plugin, name=name)
    return manager


def objects(directory: Path, compression: str = "UNCOMPRESSED") -> dict[str, bytes]:
    """Every object under ``directory`` by key (its path below it), decompressed;
    a temporary file left behind would show up here and fail the tests."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            found[path.relative_to(directory).as_posix()] = decompress(
                compression, path.read_bytes()
            )
    return found


def lines(found: dict[str, bytes]) -> list[bytes]:
    return [line for data in found.values() for line in data.splitlines() if line]


def delimited(bucket: str, prefix: str, interval: int, size: int, **more: Any) -> dict[str, Any]:
    """A destination writing records a line each under ``prefix``."""
    return {
        "BucketARN": f"arn:aws:s3:::{bucket}",
        "Prefix": prefix,
        "BufferingHints": {"IntervalInSeconds": interval, "SizeInMBs": size},
        "ProcessingConfiguration": {
            "Enabled": True,
            "Processors": [{"Type": "AppendDelimiterToRecord"}],
        },
        **more,
    }
