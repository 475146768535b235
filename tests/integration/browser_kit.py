"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by .ci/run)
through Selenium, for the tests that look at pages in a real browser."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: How long one page load may take before the driver gives up.
PAGE_LOAD_TIMEOUT_S = 30


@contextmanager
def headless_chromium(window_size: str) -> Iterator[Any]:
    """A headless Chromium driver with a ``window_size`` ("1400,1000") window, quit on exit;
    the test is skipped where Chromium or its driver is not installed."""
    if not (CHROMEDRIVER and CHROMIUM):
        pytest.skip(
            "needs chromium and chromium-driver: apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={window_size}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
