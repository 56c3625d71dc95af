"""The SAM app's function: prints what it is given as a JSON line (or
appends it to the file SINK_FILE names, as the tests read it)."""

import json
import os


def handler(event, context=None):
    line = json.dumps(event)
    sink = os.environ.get("SINK_FILE")
    if sink:
        with open(sink, "a") as out:
            out.write(line + "\n")
    else:
        print(line, flush=True)
    return {"ok": True}
