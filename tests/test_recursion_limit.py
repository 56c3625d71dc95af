"""Loading every plugin leaves Python's recursion limit as it was: deep
patterns and events are refused through the RecursionError they raise
(tests/test_fuzz.py, tests/test_regressions.py), and a library raising the
limit process-wide (jsonata-python does, on import) would silently lift
that guard and let recursive code overflow the C stack."""

from __future__ import annotations

import subprocess
import sys


def test_loading_every_plugin_keeps_the_recursion_limit() -> None:
    code = (
        "import sys\n"
        "before = sys.getrecursionlimit()\n"
        "from pipelines.pluginmanager import get_plugin_manager, target_types\n"
        "target_types(get_plugin_manager())\n"
        "import plugins.states.jsonata_mode\n"
        "print(before, sys.getrecursionlimit())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = done.stdout.split()
    assert after == before
