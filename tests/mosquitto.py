"""A real Mosquitto broker for tests: started on a free 127.0.0.1 port with a
generated config, stopped after; and the mosquitto_pub/_sub clients."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mosquitto:
    directory: Path
    port: int
    extra: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            # As root, mosquitto would drop to a user who cannot read pytest's files.
            + ("user root\n" if os.geteuid() == 0 else "")
            + self.extra
        )
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto did not start: {(self.directory / 'mosquitto.log').read_text()}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def broker(self) -> dict[str, object]:
        """The ``broker`` settings of a config."""
        return {
            "host": self.host,
            "port": self.port,
            "reconnect": {"initial": 0.05, "maximum": 0.5},
        }

    def _client(self, program: str, topic: str, qos: int) -> list[str]:
        """A mosquitto client's command line: this broker, MQTT 5, the topic and QoS."""
        host = ["-h", self.host, "-p", str(self.port)]
        return [program, *host, "-V", "5", "-q", str(qos), "-t", topic]

    def pub(self, topic: str, *messages: str, qos: int = 1, extra: tuple[str, ...] = ()) -> None:
        """mosquitto_pub: each message once (several at once with -l)."""
        subprocess.run(
            [*self._client("mosquitto_pub", topic, qos), *extra, "-l"],
            input="\n".join(messages) + "\n",
            text=True,
            check=True,
            timeout=120,
        )

    def sub(self, topic: str, count: int, *, timeout: float = 20) -> subprocess.Popen[str]:
        """mosquitto_sub for ``count`` messages, printing topic and payload (-v)."""
        process = subprocess.Popen(
            [
                *self._client("mosquitto_sub", topic, 1),
                *("-C", str(count), "-W", str(int(timeout)), "-v"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # subscribed before anything is published
        return process


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def listener(self) -> str:
        """Mosquitto settings for the listener above them: TLS with this CA,
        and a client certificate required."""
        return (
            f"cafile {self.ca}\ncertfile {self.server_cert}\nkeyfile {self.server_key}\n"
            "require_certificate true\n"
        )


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, made with the openssl command (EC keys: fast)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=pipelines test CA")  # fmt: skip
    for name, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid,issuer\n" + extensions
        )
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                "-extfile", f"{name}.ext")  # fmt: skip
    return Certificates(
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
    )


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto mosquitto-clients")
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    broker = Mosquitto(directory, free_port())
    broker.start()
    yield broker
    broker.stop()
