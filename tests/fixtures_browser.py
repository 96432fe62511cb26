"""A real headless browser for the dashboard's tests: Debian's chromium, driven by Playwright
through `executable_path` (Playwright's own browser download is not reachable here).

Screenshots go to ARTIFACTS (``AIORCH_TEST_ARTIFACTS``, default ``.data/test-artifacts``), one
per page a test looks at, for people to review; README's screenshots are copied from there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.tiers import missing_lab

ARTIFACTS = Path(os.environ.get("AIORCH_TEST_ARTIFACTS", ".data/test-artifacts")).resolve()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One browser per test module; each test opens its own context (cookies are per
    context, so sessions never leak between tests). Not per session: Playwright's sync API
    keeps an event loop running on the main thread while it is open, and a lab made then
    (pyroute2 runs its own loop) would fail with "This event loop is already running"."""
    executable = shutil.which("chromium")
    if executable is None:
        missing_lab("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


def new_page(chromium: Browser, base_url: str) -> Page:
    """A fresh context on the hub. The hub's certificate is issued by its own CA, which this
    throwaway browser profile does not hold; TLS to the hub is verified by the API tests."""
    context = chromium.new_context(
        base_url=base_url, ignore_https_errors=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in(page: Page, token: str) -> None:
    """Sign in through the form, as a person would."""
    page.goto("/ui/login")
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_url("**/ui/")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
