"""The SAM app's function: prints what it is given as a JSON line (or
appends it to the file SINK_FILE names, as the tests read it). It is given
Lambda's events, as on AWS: an EventBridge rule's input, an SNS event and an
SQS batch (each ``{"Records": [...]}``)."""

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
    records = event.get("Records") if isinstance(event, dict) else None
    if records and records[0].get("eventSource") == "aws:sqs":
        return {"batchItemFailures": []}  # every message done: the queue deletes them
    return {"ok": True}
