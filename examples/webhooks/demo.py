"""The webhook example end to end: GitHub-style pushes in, chat messages out.

Starts the chat stand-in (chat.py) and ``pipelines run pipeline.yaml``, then
posts each push in pushes.json with curl, signed as GitHub signs them
(``X-Hub-Signature-256``), plus one with a wrong signature. Prints one JSON
document: the answers curl got, the chat messages, and what the queue
``failed`` holds (the push the chat refused).

    python examples/webhooks/demo.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET = "webhook-demo-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {port}")
        time.sleep(0.05)


def post(url: str, body: bytes, signature: str) -> int:
    done = subprocess.run(
        [
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url,
            "-H", "Content-Type: application/json", "-H", "X-GitHub-Event: push",
            "-H", f"X-Hub-Signature-256: {signature}", "--data-binary", "@-",
        ],
        input=body, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return int(done.stdout)


def wait_for_dead_letter(state: str, env: dict[str, str]) -> list[object]:
    """The events in the queue ``failed``, once there is one (up to 20 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = subprocess.run(
            pipelines("queue", "receive", "failed", "--state", state, "-n", "10", "--delete"),
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        messages = json.loads(done.stdout)
        if messages:
            return [json.loads(message["Body"]) for message in messages]
        time.sleep(0.1)
    raise SystemExit("nothing reached the queue failed")


def pipelines(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("pipelines")
    return [str(script) if script.exists() else "pipelines", *args]


def main() -> None:
    api_port, chat_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as directory:
        state = str(Path(directory) / "state.db")
        env = {
            **os.environ,
            "GITHUB_SECRET": SECRET,
            "API_PORT": str(api_port),
            "CHAT_URL": f"http://127.0.0.1:{chat_port}",
            "STATE": state,
        }
        chat = subprocess.Popen(
            [sys.executable, str(HERE / "chat.py"), str(chat_port)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        runner = subprocess.Popen(
            pipelines("run", str(HERE / "pipeline.yaml"), "--no-control"),
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(chat_port)
            wait_for(api_port)
            url = f"http://127.0.0.1:{api_port}/hooks/github"
            answers = []
            for push in json.loads((HERE / "pushes.json").read_text()):
                body = json.dumps(push).encode()
                digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                answers.append(post(url, body, f"sha256={digest}"))
            answers.append(post(url, b'{"ref": "refs/heads/main"}', "sha256=" + "0" * 64))
            # The chat refuses one push with a 400: not retried, dead-lettered at once.
            failed = wait_for_dead_letter(state, env)
            chat_line = chat.stdout.readline() if chat.stdout else ""
        finally:
            runner.terminate()
            runner.wait(timeout=30)
            chat.terminate()
            chat.wait(timeout=10)
    report = {"answers": answers, "chat": [json.loads(chat_line)], "failed": failed}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
