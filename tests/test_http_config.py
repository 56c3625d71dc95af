"""Connections and API destinations in a config: every mistake located, secrets never shown."""

from __future__ import annotations

from pathlib import Path

from .helpers import run_cli

BAD = """\
resources:
  hook:
    type: api_destination
    endpoint: not a url
    invocation_rate_limit_per_second: 0
    connection:
      authorization_type: KERBEROS
  hook2:
    type: api_destination
    endpoint: https://example.com/a/*/b/*
    connection: {authorization_type: BASIC, basic: {username: u, password: hunter2}}
  conn: {type: connection, authorization_type: API_KEY, api_key: {name: k, value: v}}
  oauth:
    type: connection
    authorization_type: OAUTH_CLIENT_CREDENTIALS
    oauth: {authorization_endpoint: ftp://x, http_method: PATCH, client_id: c}
rules:
  r:
    pattern: {source: [x]}
    targets:
      - id: t
        resource: hook2
        http_parameters: {path_parameter_values: [one]}
      - id: c
        resource: conn
      - id: h
        resource: hook2
        http_parameters: {path_parameter_values: [a, b], header_parameters: {"bad header": x}}
      - id: q
        resource: hook2
        http_parameters: {path_parameter_values: ['$.detail[?x]', b]}
"""


def test_every_mistake_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(BAD)
    done = run_cli("validate", str(config))
    assert done.returncode == 1
    lines = done.stderr.splitlines() + done.stdout.splitlines()
    expected = [
        "bad.yaml:4:5: resources.hook.endpoint: must be an http(s) URL",
        "bad.yaml:5:5: resources.hook.invocation_rate_limit_per_second: must be between 1 and",
        "bad.yaml:7:7: resources.hook.connection.authorization_type: must be one of BASIC,",
        "bad.yaml:16:13: resources.oauth.oauth.authorization_endpoint: must be an http(s) URL",
        "bad.yaml:16:46: resources.oauth.oauth.http_method: must be one of GET, POST, PUT",
        "bad.yaml:16:5: resources.oauth.oauth.client_secret: is required",
        "bad.yaml:23:27: rules.r.targets[0].http_parameters.path_parameter_values: the endpoint"
        " https://example.com/a/*/b/* has 2 '*' path parameters; 1 value given",
        "bad.yaml:25:9: rules.r.targets[1].resource: 'conn' is a connection",
        "bad.yaml:28:78: rules.r.targets[2].http_parameters.header_parameters.bad header:"
        " 'bad header' is not a header name",
        "bad.yaml:31:51: rules.r.targets[3].http_parameters.path_parameter_values[0]:",
    ]
    for start in expected:
        assert any(f"/{start}" in line for line in lines), (start, lines)
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_the_schema_describes_both_types(tmp_path: Path) -> None:
    import json

    done = run_cli("schema")
    schema = json.loads(done.stdout)
    text = json.dumps(schema)
    assert "invocation_rate_limit_per_second" in text
    assert "OAUTH_CLIENT_CREDENTIALS" in text
