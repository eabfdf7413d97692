"""Fixtures of the stack tests: one headless Chromium per module (the web page tests)."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from ..support.browser import CHROMIUM, CHROMIUM_ARGS


# Module scope: Playwright's sync API keeps an event loop running in the main thread until it exits,
# which would break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
