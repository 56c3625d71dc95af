"""The transformation of examples/clickstream-lake: Firehose's record contract.

Each record is a page view (JSON). A crawler's view comes back ``Dropped``;
any other ``Ok``, unchanged, with its customer as a partition key (the
Parquet stream's prefix names it: ``!{partitionKeyFromLambda:customer}``).
A record that is not a page view is ``ProcessingFailed``: it goes to the
error output (errors/.../processing-failed/).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

BOTS = re.compile(r"bot|crawler|spider|slurp", re.IGNORECASE)


def drop_bots(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    answered = []
    for record in event["records"]:
        answer: dict[str, Any] = {"recordId": record["recordId"], "data": record["data"]}
        try:
            view = json.loads(base64.b64decode(record["data"]))
            customer = view["customer"]
        except (ValueError, KeyError, TypeError):
            answer["result"] = "ProcessingFailed"
        else:
            if BOTS.search(str(view.get("user_agent", ""))):
                answer["result"] = "Dropped"
            else:
                answer["result"] = "Ok"
                answer["metadata"] = {"partitionKeys": {"customer": str(customer)}}
        answered.append(answer)
    return {"records": answered}
