"""A stand-in for a chat service's incoming webhook: it prints each message it
takes as a JSON line, and refuses (400) a message whose text says "secret"
and one without the right token, as a real chat service would.

    python examples/webhooks/chat.py PORT
"""

from __future__ import annotations

import json
import os
import sys

from aiohttp import web

TOKEN = os.environ.get("CHAT_TOKEN", "demo-token")


async def post(request: web.Request) -> web.Response:
    if request.headers.get("X-Chat-Token") != TOKEN:
        return web.json_response({"error": "bad token"}, status=401)
    message = await request.json()
    if "secret" in message.get("text", ""):
        return web.json_response({"error": "messages may not contain secrets"}, status=400)
    channel = request.match_info["channel"]
    line = {"channel": channel, "repository": request.headers.get("X-Repository"), **message}
    print(json.dumps(line), flush=True)
    return web.json_response({"ok": True})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/hooks/{channel}", post)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
