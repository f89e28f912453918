"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver (no downloads).

Selenium Manager would fetch a browser or a driver it cannot find: it is never asked, since both
paths are given. Skips on a developer machine without them; fails where SERVEWATCH_REQUIRE_TOOLS
is set (CI installs the packages chromium and chromium-driver).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import require_module, require_tool

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A WebDriver on a fresh profile that keeps the browser console's messages."""
    browser = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    require_module("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="sw-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()  # chromedriver ends the browser it started; Service stops chromedriver
