"""The dashboard in a real browser: sign in and out by clicking, as a person would."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser

from tests.fixtures_browser import new_page, screenshot, sign_in
from tests.fixtures_hub import HubProcess

pytestmark = pytest.mark.e2e


def test_signing_in_and_out_in_a_browser(shared_hub: HubProcess, chromium: Browser) -> None:
    page = new_page(chromium, shared_hub.url)
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    sign_in(page, shared_hub.admin_token)
    assert page.locator("h1").inner_text() == "Fleet"
    screenshot(page, "smoke-fleet")
    page.click("#sign-out")
    page.wait_for_url("**/ui/login")
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    page.context.close()
