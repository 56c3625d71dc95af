"""What the firehose tests share: the plugin registered directly (as an
installed one would be through its entry point), objects read back from a
bucket directory."""

from __future__ import annotations

from pathlib import Path

import pluggy

import plugins.firehose
from plugins.firehose.formats import decompress

from .recorder import plugin_manager


def firehose_plugins() -> pluggy.PluginManager:
    manager = plugin_manager()
    if manager.get_plugin("firehose") is None:
        manager.register(plugins.firehose, name="firehose")
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
