"""The SAM app's function: records what it is given (SINK_FILE)."""

import json
import os


def handler(event, context=None):
    with open(os.environ["SINK_FILE"], "a") as out:
        out.write(json.dumps(event) + "\n")
    return {"ok": True}
