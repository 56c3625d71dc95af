"""The web console in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by selenium, against a running pipeline
(``pipelines run --api 127.0.0.1:0 --console`` in a subprocess).

Each page's screenshot is written to ``$PIPELINES_SCREENSHOTS`` (else a
temporary directory), printed at the end of the module, for review.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiclient import boto
from tests.consolekit import ConsoleRunner, start_console

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    given = os.environ.get("PIPELINES_SCREENSHOTS")
    directory = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    yield directory
    print(f"\nconsole screenshots: {directory}")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleRunner]:
    started = start_console(tmp_path_factory.mktemp("console"))
    try:
        yield started
        started.stop()
    finally:
        started.process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def signed_in(browser: Any, runner: ConsoleRunner) -> Any:
    browser.get(runner.login)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.rules"))
    return browser


def wait_for(check: Callable[[], Any], seconds: float = 20.0, every: float = 0.2) -> Any:
    """``check()``'s first true value, tried until ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
        except WebDriverException:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(every)


def shoot(browser: Any, directory: Path, name: str) -> None:
    """The whole page, beyond the window (Chromium's DevTools protocol)."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000)}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    (directory / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def count(browser: Any, rule: str, metric: str) -> int | None:
    """A rule's count as the rules table shows it (htmx swaps the table every
    two seconds: an element read as it is replaced is read again)."""
    for _ in range(5):
        try:
            found = browser.find_elements(
                By.CSS_SELECTOR, f'span.count[data-rule="{rule}"][data-metric="{metric}"]'
            )
            return int(found[0].text) if found else None
        except StaleElementReferenceException:
            continue
    raise AssertionError("the rules table kept changing under the reader")


def put(runner: ConsoleRunner, *totals: int) -> None:
    events = boto("events", runner.url)
    entries = [
        {"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"total": total})}
        for total in totals
    ]
    assert events.put_events(Entries=entries)["FailedEntryCount"] == 0


def test_the_console_wants_the_token(browser: Any, runner: ConsoleRunner) -> None:
    status, body = runner.get("/console/")
    assert status == 401 and "Sign in" in body
    status, _ = runner.get("/console/rules.part", {"Authorization": "Bearer not-the-token"})
    assert status == 401
    status, _ = runner.get("/console/login?token=wrong")
    assert status == 401
    status, body = runner.get("/console/rules.part", {"Authorization": f"Bearer {runner.token}"})
    assert status == 200 and 'data-rule="charge"' in body
    browser.get(runner.url + "/console/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    assert not browser.find_elements(By.CSS_SELECTOR, "table.rules")


def test_the_rules_page_lists_the_rules_with_counts_that_move(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    browser.get(runner.url + "/console/")
    before = wait_for(lambda: count(browser, "charge", "MatchedEvents") is not None)
    assert before

    def rules() -> list[str]:
        cells = browser.find_elements(By.CSS_SELECTOR, "table.rules tbody tr td:first-child")
        return [cell.text for cell in cells]

    assert wait_for(rules) == ["audit", "charge"]
    start = count(browser, "charge", "MatchedEvents")
    assert start is not None
    put(runner, 10, 20, 30)
    # htmx refreshes the table every two seconds: the count moves by itself.
    wait_for(lambda: count(browser, "charge", "MatchedEvents") == start + 3)
    wait_for(lambda: (count(browser, "audit", "Invocations") or 0) >= 9)
    targets = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "table.rules").text)
    assert "payments → payments" in targets and "work → work" in targets
    # Rates appear once two samples are a second apart.
    wait_for(lambda: "/s" in browser.find_element(By.CSS_SELECTOR, "table.rules").text)
    shoot(browser, screenshots, "rules")


def test_a_rule_is_disabled_and_enabled_from_the_rules_page(
    signed_in: Any, runner: ConsoleRunner
) -> None:
    browser = signed_in
    browser.get(runner.url + "/console/")
    wait_for(lambda: count(browser, "audit", "MatchedEvents") is not None)

    def state_cell() -> Any:
        row = browser.find_element(By.XPATH, "//table[@class='rules']//tr[td/a[text()='audit']]")
        return row.find_elements(By.TAG_NAME, "td")[1]

    def toggle() -> bool:
        state_cell().find_element(By.TAG_NAME, "button").click()
        return True

    wait_for(toggle)  # (tried again if the table was swapped under the click)
    wait_for(lambda: state_cell().text.startswith("DISABLED"))
    audit, charge = (
        count(browser, "audit", "MatchedEvents"),
        count(browser, "charge", "MatchedEvents"),
    )
    assert audit is not None and charge is not None
    put(runner, 1)
    wait_for(lambda: count(browser, "charge", "MatchedEvents") == charge + 1)
    assert count(browser, "audit", "MatchedEvents") == audit  # disabled: not matched
    rules = boto("events", runner.url).list_rules()["Rules"]
    assert {r["Name"]: r["State"] for r in rules} == {"audit": "DISABLED", "charge": "ENABLED"}
    wait_for(toggle)
    wait_for(lambda: state_cell().text.startswith("ENABLED"))
    put(runner, 2)
    wait_for(lambda: count(browser, "audit", "MatchedEvents") == audit + 1)


def test_a_targets_page_shows_its_recent_failures(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    put(runner, 4321)
    browser.get(runner.url + "/console/")
    wait_for(lambda: browser.find_element(By.LINK_TEXT, "payments").click() or True)
    row = wait_for(
        lambda: [
            r
            for r in browser.find_elements(By.CSS_SELECTOR, "table.failures tbody tr")
            if "card declined for 4321" in r.text
        ]
    )
    assert "FunctionError" in row[0].text
    facts = browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "Dead-letter resource\ndeclined" in facts
    dead = int(facts.split("Dead-lettered\n")[1].split("\n")[0])
    assert dead >= 1  # 4321 went to the dead-letter queue
    shoot(browser, screenshots, "target")


def test_redriving_a_dead_letter_moves_it_back(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    sqs = boto("sqs", runner.url)
    work = sqs.get_queue_url(QueueName="work")["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName="work-dlq")["QueueUrl"]
    sqs.purge_queue(QueueUrl=work)
    sqs.send_message(QueueUrl=work, MessageBody='{"order": "redrive-me"}')
    # Received once (max_receive_count 1) and not deleted: the next receive
    # moves it to the dead-letter queue.
    assert sqs.receive_message(QueueUrl=work, VisibilityTimeout=0)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=work, WaitTimeSeconds=0)

    def depth(url: str) -> int:
        found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(found["ApproximateNumberOfMessages"])

    assert depth(dlq) == 1 and depth(work) == 0
    browser.get(runner.url + "/console/s/queues")
    browser.find_element(By.LINK_TEXT, "work-dlq").click()
    table = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "main table"))
    assert "redrive-me" in table.text and "work" in table.text
    shoot(browser, screenshots, "dead-letter-queue")
    choice = Select(browser.find_element(By.NAME, "destination"))
    assert choice.first_selected_option.text == "(the queue each message came from)"
    browser.find_element(By.CSS_SELECTOR, "button[value=redrive]").click()
    wait_for(lambda: browser.switch_to.alert).accept()  # "Move the visible messages...?"
    notice = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "p.notice.done"))
    assert notice.text == "moved 1 messages from work-dlq to their source queues"
    assert "redrive-me" not in browser.find_element(By.CSS_SELECTOR, "main table").text
    assert depth(dlq) == 0 and depth(work) == 1
    message = sqs.receive_message(QueueUrl=work)["Messages"][0]
    assert message["Body"] == '{"order": "redrive-me"}'
    sqs.delete_message(QueueUrl=work, ReceiptHandle=message["ReceiptHandle"])
    browser.get(runner.url + "/console/s/queues")
    shoot(browser, screenshots, "queues")


def test_the_alarm_chart_draws_the_metric_the_threshold_and_the_alarm(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    cloudwatch = boto("cloudwatch", runner.url)

    def went_off() -> bool:
        # A high-resolution datapoint: the 10 s period's Sum reaches 1 at once.
        cloudwatch.put_metric_data(
            Namespace="Shop",
            MetricData=[{"MetricName": "Declined", "Value": 2, "StorageResolution": 1}],
        )
        # It may be back to OK already (a 10 s period without a decline).
        history = cloudwatch.describe_alarm_history(
            AlarmName="payments-declined", HistoryItemType="StateUpdate"
        )["AlarmHistoryItems"]
        return any("to ALARM" in item["HistorySummary"] for item in history)

    wait_for(went_off, 40, every=1.0)
    browser.get(runner.url + "/console/alarms")
    row = browser.find_element(By.CSS_SELECTOR, "main table tbody tr")
    assert "payments-declined" in row.text and "Shop Declined" in row.text
    browser.find_element(By.LINK_TEXT, "payments-declined").click()
    figure = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "figure.chart.drawn"))
    assert figure.get_attribute("data-threshold") == "1"
    assert int(figure.get_attribute("data-points")) >= 1
    assert int(figure.get_attribute("data-alarm-spans")) >= 1
    canvas = figure.find_element(By.TAG_NAME, "canvas")
    assert canvas.size["width"] > 300 and canvas.size["height"] > 200
    # The threshold is drawn: red pixels along its row, across the plot.
    red = browser.execute_script(
        """
        const figure = arguments[0], plot = figure.plot, ctx = plot.ctx;
        const y = Math.round(plot.valToPos(plot.threshold, "y", true));
        const row = ctx.getImageData(plot.bbox.left, y - 1, plot.bbox.width, 3).data;
        let red = 0;
        for (let i = 0; i < row.length; i += 4)
            if (row[i] > 180 && row[i + 1] < 90 && row[i + 2] < 90) red++;
        return red;
        """,
        figure,
    )
    assert red > 100
    # A time axis, labelled (uPlot draws the labels on the canvas); the
    # history lists the change to ALARM.
    axis = browser.execute_script(
        "const p = arguments[0].plot; return [p.scales.x.time, p.axes[0].label];", figure
    )
    assert axis == [True, "time (UTC)"]
    history = browser.find_element(By.CSS_SELECTOR, "table.history").text
    assert "to ALARM" in history
    shoot(browser, screenshots, "alarm")


def test_the_pattern_tester_says_whether_an_event_matches(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    browser.get(runner.url + "/console/patterns?bus=default&rule=charge")
    pattern = browser.find_element(By.NAME, "pattern")
    assert json.loads(pattern.get_attribute("value")) == {
        "source": ["shop"],
        "detail-type": ["OrderPlaced"],
    }
    event = browser.find_element(By.NAME, "event")
    event.clear()
    event.send_keys(json.dumps({"source": "shop", "detail-type": "OrderShipped", "detail": {}}))
    browser.find_element(By.CSS_SELECTOR, "form.tester button").click()
    verdict = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#verdict .verdict"))
    assert verdict.text == "does not match"
    # Why: the field, what the pattern wants there, what the event has.
    why = browser.find_elements(By.CSS_SELECTOR, "#verdict table.why tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[0].text for row in why] == ["detail-type"]
    cells = [cell.text for cell in why[0].find_elements(By.TAG_NAME, "td")]
    assert cells[1:3] == ['["OrderPlaced"]', '["OrderShipped"]']
    shoot(browser, screenshots, "pattern-tester")
    # Each $or branch says what failed in it.
    pattern.clear()
    pattern.send_keys(
        json.dumps(
            {"$or": [{"source": ["bank"]}, {"detail-type": ["OrderPlaced"], "detail": {"x": [1]}}]}
        )
    )
    browser.find_element(By.CSS_SELECTOR, "form.tester button").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#verdict table.why")) == 2)
    branches = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#verdict h3")]
    assert branches == ["Branch 1 of 2 ($or)", "Branch 2 of 2 ($or)"]
    second = browser.find_elements(By.CSS_SELECTOR, "#verdict table.why")[1].text
    assert "detail-type" in second and "detail.x" in second
    shoot(browser, screenshots, "pattern-tester-or")
    pattern.clear()
    pattern.send_keys('{"source": ["shop"], "detail-type": ["OrderPlaced"]}')
    event.clear()
    event.send_keys(json.dumps({"source": "shop", "detail-type": "OrderPlaced"}))
    browser.find_element(By.CSS_SELECTOR, "form.tester button").click()
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#verdict .verdict").text == "matches")
    pattern.clear()
    pattern.send_keys('{"source": "shop"}')
    browser.find_element(By.CSS_SELECTOR, "form.tester button").click()
    problem = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#verdict .notice.error"))
    assert problem.text.startswith("the pattern is not valid")


def test_the_live_tap_shows_events_as_they_are_dispatched(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    browser.get(runner.url + "/console/tap")
    wait_for(lambda: "watching" in browser.find_element(By.CSS_SELECTOR, "#tap p").text)
    put(runner, 777)
    entry = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "ol.events li"))
    assert '"total": 777' in entry.text and "OrderPlaced" in entry.text
    shoot(browser, screenshots, "tap")


def test_archives_logs_and_streams_are_browsed(
    signed_in: Any, runner: ConsoleRunner, screenshots: Path
) -> None:
    browser = signed_in
    events = boto("events", runner.url)
    now = time.time()
    events.start_replay(
        ReplayName="again",
        EventSourceArn="arn:aws:events:us-east-1:000000000000:archive/everything",
        EventStartTime=now - 3600,
        EventEndTime=now,
        Destination={"Arn": "arn:aws:events:us-east-1:000000000000:event-bus/default"},
    )
    browser.get(runner.url + "/console/archives")
    wait_for(lambda: "COMPLETED" in browser.find_element(By.TAG_NAME, "main").text, 30)
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "everything" in text and "again" in text
    assert browser.find_element(By.TAG_NAME, "progress")
    shoot(browser, screenshots, "archives")

    browser.get(runner.url + "/console/s/logs")
    browser.find_element(By.LINK_TEXT, "/shop/audit").click()
    search = browser.find_element(By.NAME, "filter")
    search.send_keys("{ $.detail.total > 1000 }")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    wait_for(lambda: "filter=" in browser.current_url)  # the searched page, not the first
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "main table tbody tr"))
    assert rows and all('"total":' in row.text for row in rows)
    totals = {json.loads(row.find_elements(By.TAG_NAME, "td")[2].text)["detail"]["total"]
              for row in rows}  # fmt: skip
    assert totals and all(total > 1000 for total in totals)
    shoot(browser, screenshots, "log-group")

    browser.get(runner.url + "/console/s/streams")
    browser.find_element(By.LINK_TEXT, "clicks").click()
    tables = browser.find_elements(By.CSS_SELECTOR, "main table")
    assert "shardId-000000000001" in tables[0].text
    assert "OrderPlaced" in tables[1].text
    shoot(browser, screenshots, "stream")

    # The rules page once all of the above happened (docs/console.png is one).
    browser.get(runner.url + "/console/")
    wait_for(lambda: count(browser, "charge", "MatchedEvents"))
    time.sleep(2.5)  # a second sample: rates shown
    shoot(browser, screenshots, "overview")
