"""Driving the web page in Debian's Chromium through Playwright: the launch options and what a
person sees on the page."""

from __future__ import annotations

import os

from playwright.sync_api import Page, expect

CHROMIUM = os.environ.get("TOKENRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def tokens_shown(page: Page) -> int:
    return int(page.locator("#answer").get_attribute("data-tokens") or 0)


def answer_text(page: Page) -> str:
    return "".join(page.locator("#answer .tok").all_text_contents())


def wait_state(page: Page, state: str, timeout_s: float = 20) -> None:
    expect(page.locator("#status")).to_have_attribute("data-state", state, timeout=timeout_s * 1000)
