"""The console in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) through Selenium, against a running pipeline (router and api worker
answering through the fake Anthropic server) on a real broker.

Basic auth: the browser sends the operator's ``Authorization`` header on every request through
the Chrome DevTools protocol (``Network.setExtraHTTPHeaders``), so page loads, the overview's
refresh fetches and form posts all carry it (credentials in the URL would cover only the
first navigation).

``SWITCHBOARD_CONSOLE_SCREENSHOTS=docs`` saves the screenshots docs/console.md shows.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.app import Pipeline
from producers import SwitchboardClient
from switchboard.devtools.fake_anthropic import FakeAnthropic

from .browser_kit import headless_chromium
from .console_kit import PERMANENT, Seed, ServedConsole, seed, until
from .harness import RunningPipeline, create_topics, settings_for_test

pytestmark = pytest.mark.integration

OPERATOR = ("olga", "op-pass-41c7")
#: Tasks waiting on the perf topic, whose worker group is not running: its lag.
PERF_BACKLOG = 4
#: Requests the api worker answers, one after the other (a steady stream over a few of the
#: console's samples), before the overview is looked at: its latency chart.
API_ANSWERS = 12


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium("1400,1000") as driver:
        token = base64.b64encode(":".join(OPERATOR).encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        yield driver


def _workers(p: Pipeline) -> None:
    p.add_router()
    p.add_worker("api", 8)


def test_an_operator_sees_lag_filters_replays_a_dead_letter_and_follows_it_to_its_answer(
    browser: Any, kafka_bootstrap: str, kafka_config: dict[str, str], tmp_path: Path
) -> None:
    """With a router and an api worker running and four tasks waiting for perf (no perf
    worker), the overview shows worker.perf's lag of 4, and, once twelve api requests are
    answered one after the other, worker.api's end-to-end latency chart (p50 and p99) with
    the twelve counted, and none for the router's and perf's groups; filtering the DLQ by specialist api
    leaves the one api letter of the two; its page shows the decoded request; the dry run says
    it would replay 1 to the api task topic; applying it sends it; following the request shows
    its dead letter and then an answered response with stage latencies; the audit page lists
    the replay by olga."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = Path(os.environ.get("SWITCHBOARD_CONSOLE_SCREENSHOTS") or tmp_path)
    driver = browser
    with FakeAnthropic(latency_ms=2) as fake:
        settings = settings_for_test(
            kafka_bootstrap,
            fake=fake,
            console_users=json.dumps({OPERATOR[0]: {"password": OPERATOR[1], "role": "operator"}}),
            status_interval_s=0.5,
            console_refresh_s=0.5,
        )
        kafka = dict(kafka_config)
        topics = create_topics(settings, kafka)
        seed(
            settings,
            kafka,
            [
                Seed("br-api-1", "api", "acme", PERMANENT, "/api design cursor pagination"),
                Seed("br-data-1", "data", "globex", PERMANENT, "/data build a CDC pipeline"),
            ],
        )
        producer = Producer(kafka)
        for i in range(PERF_BACKLOG):
            producer.produce(topics.tasks("perf"), b"waiting", f"perf-{i}".encode(), partition=0)
        assert producer.flush(30) == 0
        with (
            RunningPipeline(settings, kafka, _workers),
            ServedConsole(settings, kafka) as console,
            SwitchboardClient(kafka, topic_prefix=settings.topic_prefix) as client,
        ):
            driver.get(console.url + "/")
            assert driver.find_element(By.ID, "who").text.startswith("olga (operator)")

            def perf_lag() -> bool:
                try:
                    return lag_shown()
                except StaleElementReferenceException:  # the refresh redrew the table meanwhile
                    return False

            def lag_shown() -> bool:
                rows = driver.find_elements(
                    By.CSS_SELECTOR, '#groups tr[data-role="worker.perf"] .lag'
                )
                api = driver.find_elements(By.CSS_SELECTOR, '#groups tr[data-role="worker.api"]')
                return bool(
                    rows and rows[0].text == str(PERF_BACKLOG) and api and "@" in api[0].text
                )

            until(perf_lag, 30)  # the overview refreshes itself: no reload here

            for i in range(API_ANSWERS):
                assert client.ask(f"/api design pagination, take {i}", timeout=30).status == (
                    "answered"
                )

            def latency_drawn() -> list[str] | None:
                try:
                    cell = driver.find_element(
                        By.CSS_SELECTOR, '#groups tr[data-role="worker.api"] .latency-cell'
                    )
                    drawn = cell.find_elements(By.CSS_SELECTOR, "svg.latency .p99")
                    shown = [cell.find_element(By.CSS_SELECTOR, f"span.{q}").text for q in qs]
                    return shown if drawn and f"({API_ANSWERS} in" in cell.text else None
                except (StaleElementReferenceException, NoSuchElementException):
                    return None  # redrawn meanwhile, or not counted yet

            qs = ("p50", "p99")
            p50, p99 = (float(v) for v in until(latency_drawn, 30))
            assert 0 < p50 <= p99 < 30_000  # real figures from the worker's own histograms
            for role in ("router", "worker.perf"):
                row = driver.find_element(By.CSS_SELECTOR, f'#groups tr[data-role="{role}"]')
                assert not row.find_elements(By.CSS_SELECTOR, "svg.latency .p99")
            driver.save_screenshot(str(shots / "console-overview.png"))

            driver.get(console.url + "/dlq")
            assert driver.find_element(By.ID, "matched").text.startswith("2 of 2")
            Select(driver.find_element(By.ID, "f-specialist")).select_by_visible_text("api")
            driver.find_element(By.ID, "apply-filter").click()
            until(settled(lambda: driver.find_element(By.ID, "matched").text.startswith("1 of 2")))
            rows = driver.find_elements(By.CSS_SELECTOR, "#letters tr.letter")
            assert [r.find_element(By.CLASS_NAME, "specialist").text for r in rows] == ["api"]
            driver.save_screenshot(str(shots / "console-dlq.png"))

            # Each click below loads a new page: wait for its element rather than race the load.
            rows[0].find_element(By.CSS_SELECTOR, "td:nth-child(2) a").click()
            assert "cursor pagination" in text_of(driver, "request")
            assert text_of(driver, "hex").startswith("00000000")
            driver.find_element(By.ID, "plan-one").click()
            assert text_of(driver, "would-send") == "1"
            assert topics.tasks("api") in driver.find_element(By.ID, "plan").text
            driver.find_element(By.ID, "apply").click()
            assert text_of(driver, "outcome-summary").startswith("1 sent, 0 failed")

            driver.find_element(By.CSS_SELECTOR, "#outcome a.follow").click()
            shown(driver, "final-status")

            def answered() -> bool:
                if driver.find_element(By.ID, "final-status").text == "answered":
                    return True
                driver.refresh()
                return False

            until(settled(answered), 30)
            kinds = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#path .kind")]
            assert "dead letter" in kinds and "task" in kinds and kinds.count("response") == 2
            assert driver.find_elements(By.CSS_SELECTOR, "#latency tr")
            driver.save_screenshot(str(shots / "console-follow.png"))

            driver.get(console.url + "/audit")
            [event] = driver.find_elements(By.CSS_SELECTOR, "#audit tr.event")
            assert event.find_element(By.CLASS_NAME, "user").text == "olga"
            assert event.find_element(By.CLASS_NAME, "action").text == "replay"
            assert event.find_element(By.CLASS_NAME, "count").text == "1"


def settled(condition: Callable[[], Any]) -> Callable[[], Any]:
    """``condition``, read as "not yet" while the page it looks at is being replaced.

    A click that submits a form, or a refresh, swaps the document under the driver: an element
    found a moment ago goes stale, or the new page has not drawn it yet. Both mean wait.
    """
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def check() -> Any:
        try:
            return condition()
        except (StaleElementReferenceException, NoSuchElementException):
            return None

    return check


def text_of(driver: Any, element_id: str, timeout_s: float = 15.0) -> str:
    """The text of ``#element_id`` once the page that has it has loaded and holds still."""
    read = settled(lambda: (shown(driver, element_id, timeout_s).text,))
    return str(until(read, timeout_s)[0])


def shown(driver: Any, element_id: str, timeout_s: float = 15.0) -> Any:
    """The element with ``element_id`` once the page that has it has loaded."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout_s
    while True:
        found = driver.find_elements(By.ID, element_id)
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no #{element_id} on {driver.current_url} after {timeout_s}s")
        time.sleep(0.05)
