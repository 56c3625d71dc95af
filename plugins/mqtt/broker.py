"""How to reach an MQTT broker: the ``broker`` settings, and a connection
opened with them (MQTT 5, TLS, username and password, sessions)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, Problems, Where
from pipelines.settings import Flag, Number, Section, Settings, Shape
from pipelines.store import Location

from .connection import Connection

_TEXT = {"type": "string"}
TLS_TABLE = Settings(
    {
        "ca_file": Shape(_TEXT, "default: the system's trusted certificates"),
        "cert_file": Shape(_TEXT, "the client certificate"),
        "key_file": Shape(_TEXT, "its key, when not in cert_file"),
        "insecure": Flag(False, "skip hostname verification (never in production)"),
    }
)
RECONNECT_TABLE = Settings(
    {
        "initial": Number(0.5, 0.01, 3600, description="seconds before the first retry"),
        "maximum": Number(30, 0.01, 3600, description="at least initial"),
    }
)
BROKER_TABLE = Settings(
    {
        "host": Shape({**_TEXT, "default": "127.0.0.1"}),
        "port": Number(
            None, 1, 65535, integer=True, variable=True, description="default 1883, 8883 with tls"
        ),
        "username": Shape(_TEXT),
        "password": Shape(_TEXT),
        "tls": Shape({"oneOf": [{"type": "boolean"}, TLS_TABLE.schema()]}),
        "client_id": Shape(_TEXT),
        "clean_start": Flag(None),
        "session_expiry": Number(3600, 0, 2**32 - 1, integer=True),
        "keepalive": Number(60, 5, 65535, integer=True),
        "receive_maximum": Number(
            100,
            1,
            65535,
            integer=True,
            description="QoS 1/2 messages the broker may send before their acknowledgement",
        ),
        "connect_timeout": Number(10, 0.1, 300),
        "reconnect": Section(RECONNECT_TABLE),
    }
)
BROKER_KEYS = BROKER_TABLE.names
TLS_KEYS = TLS_TABLE.names
RECONNECT_KEYS = RECONNECT_TABLE.names


@dataclass(frozen=True)
class Tls:
    ca_file: str | None = None  # None: the system's trusted certificates
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip hostname verification (never in production)

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            context.check_hostname = False
        return context


@dataclass(frozen=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: Tls | None = None
    #: None: derived from the resource and the runner's state database, so a
    #: restarted runner resumes its own session (see ``client_id_for``).
    client_id: str | None = None
    #: None: start clean only when the runner has no state database.
    clean_start: bool | None = None
    session_expiry: int = 3600  # seconds the broker keeps a session (and its messages) offline
    keepalive: int = 60
    #: MQTT 5 Receive Maximum: QoS 1/2 messages unacknowledged at once. With
    #: ``ack: delivered`` throughput is this window over a delivery's time.
    receive_maximum: int = 100
    connect_timeout: float = 10.0
    reconnect_initial: float = 0.5
    reconnect_maximum: float = 30.0

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    async def connect(
        self, client_id: str, clean_start: bool, first: bool, acknowledges: bool = True
    ) -> Connection:
        """A new connection, CONNACK received (gmqtt's errors, TimeoutError,
        OSError otherwise; nothing is left open). A clean start applies to a
        resource's first connection only: a reconnect resumes the session.
        ``acknowledges``: some subscription is at QoS 1 or 2."""
        connection = Connection(
            client_id,
            clean_start and first,
            0 if clean_start else self.session_expiry,
            self.receive_maximum,
            acknowledges,
        )
        if self.username is not None:
            connection.set_auth_credentials(self.username, self.password)
        try:
            await connection.open(
                self.host,
                self.port,
                self.tls.context() if self.tls else None,
                self.keepalive,
                self.connect_timeout,
            )
        except BaseException:
            await connection.close()
            raise
        return connection


def client_id_for(
    broker: Broker, resource: str, state_path: Location | None, runner: str | None = None
) -> tuple[str, bool]:
    """The client id and clean-start flag a resource connects with.

    A runner with a state database gets an id derived from that database's
    path: stable across restarts (so the broker hands a restarted runner the
    messages it had not acknowledged) and different for each runner of a
    cluster on one machine; on a PostgreSQL state shared by a cluster, from
    its URL and the runner's name (stable when the runner is named).
    Without a state database nothing survives a restart anyway: a random id
    and a clean start.
    """
    if broker.client_id is not None:
        return broker.client_id, bool(broker.clean_start)
    if state_path is None:
        return f"pipelines-{resource}-{uuid.uuid4().hex[:12]}", True
    where = str(state_path.resolve()) if isinstance(state_path, Path) else f"{state_path}#{runner}"
    digest = hashlib.sha256(where.encode()).hexdigest()[:12]
    host = socket.gethostname()[:40]
    clean = bool(broker.clean_start) if broker.clean_start is not None else False
    return f"pipelines-{resource}-{host}-{digest}", clean


def parse_broker(where: Where, config: Any) -> Broker:
    """The ``broker`` settings, each problem named by its place."""
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be a mapping (host, port, username, password, tls, ...)")
    problems = Problems()
    with problems:
        BROKER_TABLE.check_keys(where, config)
    host = config.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        problems.add(ConfigError(where / "host", f"must be a host name or address, not {host!r}"))
    tls = None
    with problems:
        tls = _tls(where / "tls", config.get("tls"))
    numbers: dict[str, float] = {}
    with problems:
        numbers["port"] = BROKER_TABLE.number(where, config, "port", default=8883 if tls else 1883)
    for key in ("session_expiry", "keepalive", "receive_maximum", "connect_timeout"):
        with problems:
            numbers[key] = BROKER_TABLE.number(where, config, key)
    with problems:
        strings = _optional_strings(
            where, config, ("username", "password", "client_id"), "a string"
        )
        if strings["password"] is not None and strings["username"] is None:
            raise ConfigError(where / "password", "needs a username")
    with problems:
        clean_start = BROKER_TABLE.flag(where, config, "clean_start")
    with problems:
        initial, maximum = _reconnect(where / "reconnect", config.get("reconnect") or {})
    problems.raise_any()
    return Broker(
        host=host,
        port=int(numbers["port"]),
        username=strings["username"],
        password=strings["password"],
        tls=tls,
        client_id=strings["client_id"],
        clean_start=clean_start,
        session_expiry=int(numbers["session_expiry"]),
        keepalive=int(numbers["keepalive"]),
        receive_maximum=int(numbers["receive_maximum"]),
        connect_timeout=numbers["connect_timeout"],
        reconnect_initial=initial,
        reconnect_maximum=maximum,
    )


def _reconnect(where: Where, reconnect: Any) -> tuple[float, float]:
    """The reconnect backoff: its first delay and the most it grows to."""
    if not isinstance(reconnect, Mapping):
        raise ConfigError(where, "must be a mapping with initial and maximum")
    RECONNECT_TABLE.check_keys(where, reconnect)
    initial = RECONNECT_TABLE.number(where, reconnect, "initial")
    return initial, RECONNECT_TABLE.number(where, reconnect, "maximum", low=initial)


def _tls(where: Where, config: Any) -> Tls | None:
    if config is None or config is False:
        return None
    if config is True:
        return Tls()
    if not isinstance(config, Mapping):
        raise ConfigError(where, "must be true or a mapping (ca_file, cert_file, key_file)")
    TLS_TABLE.check_keys(where, config)
    files = _optional_strings(where, config, ("ca_file", "cert_file", "key_file"), "a file path")
    if files["key_file"] is not None and files["cert_file"] is None:
        raise ConfigError(where / "key_file", "needs cert_file (the client certificate)")
    insecure = bool(TLS_TABLE.flag(where, config, "insecure"))
    return Tls(files["ca_file"], files["cert_file"], files["key_file"], insecure)


def _optional_strings(
    where: Where, config: Mapping[str, Any], keys: tuple[str, ...], noun: str
) -> dict[str, str | None]:
    """Settings that are strings when given, each named when it is not."""
    found: dict[str, str | None] = {}
    for key in keys:
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(where / key, f"must be {noun}, not {value!r}")
        found[key] = value
    return found


BROKER_SCHEMA: dict[str, Any] = {
    **BROKER_TABLE.schema(),
    "description": "Where the MQTT broker is and how to connect (MQTT 5).",
}
