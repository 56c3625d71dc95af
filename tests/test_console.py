"""The web console without a browser: its token, its refusals, what it serves
by default, the plugins' sections, and the pure parts (rates, the alarm
chart's spans). The browser's view is tests/test_console_browser.py."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from pipelines import hookspecs
from pipelines.console.alarmchart import alarm_spans, first_shown
from pipelines.console.app import _loopback, registered_sections
from pipelines.console.rates import Rates
from pipelines.console.sections import Listing
from pipelines.errors import ConfigInvalid, PipelinesError
from tests.consolekit import ConsoleRunner, start_console
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleRunner]:
    started = start_console(tmp_path_factory.mktemp("console"))
    try:
        yield started
        started.stop()
    finally:
        started.process.kill()


def post(runner: ConsoleRunner, path: str, form: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        runner.url + path, data=form.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_every_page_but_the_login_and_the_files_wants_the_token(runner: ConsoleRunner) -> None:
    for path in ("/console/", "/console/alarms", "/console/s/queues", "/console/tap.events"):
        status, body = runner.get(path)
        assert status == 401, path
        assert "the token the runner printed" in body
    status, body = runner.get("/console/static/htmx.min.js")
    assert status == 200 and "htmx" in body[:2000]
    status, _ = runner.get("/console/static/../app.py")
    assert status in (401, 404)
    bearer = {"Authorization": f"Bearer {runner.token}"}
    assert runner.get("/console/alarms", bearer)[0] == 200
    assert runner.get("/console/nothing-here", bearer)[0] == 404
    assert runner.get("/console/s/nothing-here", bearer)[0] == 404


def test_the_login_link_sets_a_strict_http_only_cookie(runner: ConsoleRunner) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(runner.login, timeout=10)
    assert answer.value.code == 303
    cookie = answer.value.headers["Set-Cookie"]
    assert cookie.startswith(f"pipelines_console={runner.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie


def test_a_post_from_another_origin_is_refused(runner: ConsoleRunner) -> None:
    bearer = {"Authorization": f"Bearer {runner.token}"}
    form = "key=work-dlq&action=purge"
    elsewhere = {**bearer, "Origin": "http://evil.example"}
    assert post(runner, "/console/s/queues/act", form, elsewhere) == 403
    status, body = runner.get("/console/s/queues/item?key=work-dlq", bearer)
    assert status == 200 and "Queue work-dlq" in body
    # From the console's own origin it runs (and says so on the queue's page).
    here = {**bearer, "Origin": runner.url}
    assert post(runner, "/console/s/queues/act", "key=nope&action=purge", here) == 200
    status, body = runner.get("/console/s/queues/item?key=nope&failed=x", bearer)
    assert "does not exist" in body


def test_pages_answer_a_bad_request_in_words(runner: ConsoleRunner) -> None:
    bearer = {"Authorization": f"Bearer {runner.token}"}
    status, body = runner.get("/console/target?bus=default", bearer)
    assert status == 400 and "the page needs rule, id in its URL" in body
    status, body = runner.get("/console/target.part?bus=default&rule=charge&id=nope", bearer)
    assert "rule charge on bus default has no target nope" in body
    status, body = runner.get(
        "/console/s/logs/item?key=/shop/audit&filter=%7B%20%24.x%20%3D", bearer
    )
    assert status == 200 and 'class="notice error"' in body
    status, body = runner.get("/console/alarm.json?name=nope", bearer)
    assert status == 400


def test_the_aws_endpoint_still_answers_beside_the_console(runner: ConsoleRunner) -> None:
    from tests.apiclient import boto

    rules = boto("events", runner.url).list_rules()["Rules"]
    assert {rule["Name"] for rule in rules} == {"audit", "charge"}


def test_the_console_is_off_unless_asked_for(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text("state: false\napi: {listen: '127.0.0.1:0', console: yes-please}\n")
    done = run_cli("run", str(config), "--no-control")
    assert done.returncode == 1
    assert f"{config}:2:" in done.stderr and "api: must be true or false" in done.stderr
    from pipelines.config import load_config

    config.write_text("state: false\napi: '127.0.0.1:0'\n")
    loaded = load_config([config])
    assert loaded.api is not None and loaded.api.console is False
    config.write_text("state: false\napi: {listen: '127.0.0.1:0', console: true}\n")
    loaded = load_config([config])
    assert loaded.api is not None and loaded.api.console is True
    config.write_text("state: false\napi: {console: 1}\n")
    with pytest.raises(ConfigInvalid):
        load_config([config])


def test_without_a_state_database_the_sections_say_what_they_need(tmp_path: Path) -> None:
    runner = start_console(tmp_path, "state: false\n")
    try:
        bearer = {"Authorization": f"Bearer {runner.token}"}
        status, body = runner.get("/console/s/queues", bearer)
        assert status == 200
        assert "the console&#x27;s queues needs a state database" in body
        status, body = runner.get("/console/", bearer)
        assert status == 200
        runner.stop()
    finally:
        runner.process.kill()


def test_only_loopback_addresses_are_this_machine() -> None:
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("127.8.0.3")
    assert not _loopback("192.168.1.4") and not _loopback("") and not _loopback(None)
    assert not _loopback("not-an-address")


def test_the_builtin_plugins_register_their_sections() -> None:
    sections = registered_sections()
    assert {"queues", "streams", "logs"} <= set(sections)
    assert sections["queues"].title == "Queues"


def test_a_section_registered_twice_names_both_plugins() -> None:
    class Section:
        name = "things"
        title = "Things"

        async def listing(self, host: Any) -> Listing:
            return Listing([], [])

    class One:
        @hookspecs.hookimpl
        def register_console(self, register: Any) -> None:
            register(Section())

    class Two(One):
        pass

    manager = pluggy.PluginManager("pipelines")
    manager.add_hookspecs(hookspecs)
    manager.register(One(), name="one")
    manager.register(Two(), name="two")
    with pytest.raises(PipelinesError, match="'things' is registered by both 'one' and 'two'"):
        registered_sections(manager)


def test_rates_are_the_change_over_the_window() -> None:
    rates = Rates(window=10)
    key = ("MatchedEvents", "default", "r")
    assert rates.sample(100.0, {key: 0}) == {}
    assert rates.sample(102.0, {key: 20}) == {key: 10.0}
    assert rates.sample(104.0, {key: 60}) == {key: 15.0}
    # Samples older than the window go but the newest of them: the rate is
    # over the last ten seconds or a little more.
    assert rates.sample(115.0, {key: 104}) == {key: 4.0}
    assert rates.sample(130.0, {key: 104}) == {key: 0.0}


def _update(moment: str, old: str, new: str) -> dict[str, Any]:
    data = {"oldState": {"stateValue": old}, "newState": {"stateValue": new}}
    return {
        "Timestamp": moment,
        "HistoryItemType": "StateUpdate",
        "HistorySummary": f"Alarm updated from {old} to {new}",
        "HistoryData": json.dumps(data),
    }


def test_alarm_spans_come_from_the_state_history() -> None:
    base = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    history = [  # newest first, as DescribeAlarmHistory answers
        _update("2027-01-15T08:10:00Z", "OK", "ALARM"),
        _update("2027-01-15T08:05:00Z", "ALARM", "OK"),
        _update("2027-01-15T08:01:00Z", "INSUFFICIENT_DATA", "ALARM"),
        {"Timestamp": "2027-01-15T08:02:00Z", "HistoryItemType": "Action", "HistoryData": "{}"},
    ]
    spans = alarm_spans(history, "ALARM", base - 3600, base + 900)
    assert spans == [(base + 60, base + 300), (base + 600, base + 900)]
    # Clipped to the window; in ALARM since before the history kept.
    assert alarm_spans(history, "ALARM", base + 120, base + 900) == [
        (base + 120, base + 300),
        (base + 600, base + 900),
    ]
    assert alarm_spans([], "ALARM", base, base + 60) == [(base, base + 60)]
    assert alarm_spans([], "OK", base, base + 60) == []


def test_the_chart_starts_shortly_before_the_data() -> None:
    base = 1_800_000_000.0
    points = [{"Timestamp": "2027-01-15T08:00:00Z", "Sum": 1.0}]
    assert first_shown(points, [], base - 3600, base + 60, 10) == base - 300
    assert first_shown([], [], base - 3600, base + 60, 10) == base - 3600
    # Data from before the window: the window's start.
    old = [{"Timestamp": "2027-01-15T06:00:00Z", "Sum": 1.0}]
    assert first_shown(old, [], base - 3600, base + 60, 10) == base - 3600


def test_the_vendored_files_are_in_the_package_as_recorded() -> None:
    import hashlib
    import re
    from importlib import resources

    static = resources.files("pipelines.console") / "static"
    recorded = re.findall(
        r"^\| `([^`]+)` \|.*\| ([0-9a-f]{64}) \|$", (static / "README.md").read_text(), re.M
    )
    assert {name for name, _ in recorded} == {"htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in recorded:
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == digest, name
    for name in ("console.js", "console.css", "LICENSE.htmx", "LICENSE.uplot"):
        assert (static / name).is_file(), name


def test_without_api_the_console_takes_a_free_port_and_a_stop_ends_its_tap(
    tmp_path: Path,
) -> None:
    import http.client
    import time

    runner = start_console(
        tmp_path, "state: false\nrules:\n  all: {pattern: {source: [shop]}}\n", ()
    )
    try:
        assert runner.url.startswith("http://127.0.0.1:")
        connection = http.client.HTTPConnection(runner.url.split("//")[1], timeout=10)
        connection.request(
            "GET", "/console/tap.events", headers={"Cookie": f"pipelines_console={runner.token}"}
        )
        answer = connection.getresponse()
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/event-stream"
        assert answer.readline() == b": tapping\n"
        started = time.monotonic()
        runner.stop()  # SIGTERM: the open stream must not hold the shutdown
        assert time.monotonic() - started < 5
    finally:
        runner.process.kill()


async def test_the_tap_sends_at_most_its_share_per_tick_and_counts_the_rest() -> None:
    import aiohttp

    from pipelines.api import ApiServer, served_services
    from pipelines.console.app import TAP_SHOWN, Console
    from pipelines.runtime import Runtime

    runtime = Runtime()
    runtime.bus().put_rule("all", pattern={"source": ["shop"]})
    endpoint = ApiServer(runtime, served_services())
    console = Console(runtime, {})
    endpoint.keeping.value("console", lambda: console, close=Console.close, stop=Console.stop)
    endpoint.mount("/console", console.handle)
    await endpoint.start()
    received: list[dict[str, Any]] = []
    try:
        async with runtime, aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {console.token}"}
            async with session.get(endpoint.url + "/console/tap.events", headers=headers) as answer:
                assert (await answer.content.readline()) == b": tapping\n"
                entries = [{"Source": "shop", "DetailType": "n", "Detail": "{}"}] * 10
                for _ in range(50):  # 500 events in one tick
                    await runtime.put_events(entries)
                await runtime.wait_until_idle()
                while True:
                    line = await answer.content.readline()
                    if line.startswith(b"data: "):
                        received.append(json.loads(line[6:]))
                    if (
                        received
                        and sum(i.get("dropped", 0) for i in received) + len(received) >= 500
                    ):
                        break
    finally:
        await endpoint.close()
    assert TAP_SHOWN <= len(received) < 500
    assert sum(item.get("dropped", 0) for item in received) + len(received) == 500
    assert all(item["bus"] == "default" and item["event"]["source"] == "shop" for item in received)


def test_what_pages_show_is_escaped(runner: ConsoleRunner) -> None:
    from tests.apiclient import boto

    sqs = boto("sqs", runner.url)
    url = sqs.get_queue_url(QueueName="declined")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='<script>alert("body")</script>')
    bearer = {"Authorization": f"Bearer {runner.token}"}
    status, body = runner.get("/console/s/queues/item?key=declined", bearer)
    assert status == 200
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&quot;body&quot;)&lt;/script&gt;" in body
    status, body = runner.get("/console/s/queues/item?key=%3Cb%3Enope%3C/b%3E", bearer)
    assert "<b>nope</b>" not in body and "&lt;b&gt;nope&lt;/b&gt;" in body
