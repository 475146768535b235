"""report.html in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by .ci/run) through Selenium renders the summary table and the
findings, and filtering by severity hides the other rows.

``SWITCHBOARD_REVIEW_SCREENSHOT=docs/review-report.png`` saves the screenshot the docs show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.review.report import write_reports
from tests.unit.review_corpus import corpus_documents, offline_review

from .browser_kit import headless_chromium

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with headless_chromium("1400,1800") as driver:
        yield driver


def test_report_html_renders_the_summary_and_findings_and_filters_by_severity(
    browser: object, tmp_path: Path
) -> None:
    """The corpus's offline review, opened from disk: one summary row per document plus the
    total, one visible row per finding; choosing a severity leaves exactly that severity's rows
    visible and says how many are shown; choosing "all" brings every row back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select

    driver: WebDriver = browser  # type: ignore[assignment]
    result = offline_review(corpus_documents())
    path = write_reports(result, tmp_path, ["html"])["html"]
    driver.get(path.resolve().as_uri())

    assert driver.find_element(By.ID, "verdict").text == result.verdict.value.upper()
    summary_rows = driver.find_elements(By.CSS_SELECTOR, "#summary tbody tr")
    assert len(summary_rows) == len(result.documents)
    assert all(row.is_displayed() for row in summary_rows)
    total = driver.find_element(By.CSS_SELECTOR, "#summary tfoot tr").text
    assert total.startswith("Total")

    rows = driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr.finding")
    assert len(rows) == len(result.findings) > 0
    assert all(row.is_displayed() for row in rows)
    assert {row.find_elements(By.TAG_NAME, "td")[1].text for row in rows} == {
        f.rule_id for f in result.findings
    }

    counts = result.severity_counts()
    severity = next(s for s, n in counts.items() if 0 < n < len(result.findings))
    Select(driver.find_element(By.ID, "filter-severity")).select_by_value(severity)
    shown = [row for row in rows if row.is_displayed()]
    assert len(shown) == counts[severity]
    assert {row.get_attribute("data-severity") for row in shown} == {severity}
    assert driver.find_element(By.ID, "shown-count").text.startswith(str(counts[severity]))

    if target := os.environ.get("SWITCHBOARD_REVIEW_SCREENSHOT"):
        Select(driver.find_element(By.ID, "filter-severity")).select_by_value("")
        driver.save_screenshot(str(Path(target).resolve()))
    Select(driver.find_element(By.ID, "filter-severity")).select_by_value("")
    assert all(row.is_displayed() for row in rows)
