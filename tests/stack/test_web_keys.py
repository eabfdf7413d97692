"""The web page with API keys on, in a real headless Chromium against a stack of its own configured with
keys: it asks for a key, refuses a wrong one clearly, streams with a good one and resumes after a reload.
The key never appears in a URL."""

from __future__ import annotations

import re
import signal
import time

import pytest
from playwright.sync_api import Page, expect

from api.auth import hash_key
from tokenrelay.engine.demo import demo_tokens

from ..support.browser import answer_text, tokens_shown, wait_state
from ..support.processes import Stack, start_gateway, wait_until
from ..support.settings import MODEL_COUNT

KEY = "tr_web-page-test-key"
PROMPT = "Do keys get in the way?"


@pytest.fixture(scope="module")
def stack(redis_server, stack_settings):
    settings = {**stack_settings, "key_prefix": "tokenrelay-webkeys", "queue_name": "tokenrelay-webkeys",
                "api_keys": f"web:{hash_key(KEY)}"}
    with Stack(redis_server.url, settings, workers=1) as stack:
        yield stack


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.urls = []
    page.errors = []
    page.on("request", lambda request: page.urls.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()
    assert page.errors == []
    assert not any(KEY in url for url in page.urls)  # a key never travels in a URL


def enter_key(page: Page, key: str) -> None:
    expect(page.locator("#key-form")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#use-key")


def test_the_page_asks_for_a_key_and_refuses_a_wrong_one(page: Page, stack):
    page.goto(stack.url)
    expect(page.locator("#key-message")).to_have_text("This gateway needs an API key.")
    enter_key(page, "tr_not-the-key")
    expect(page.locator("#key-message")).to_have_text(
        "The gateway refused this key (invalid API key). Enter another one.")
    expect(page.locator("#model option")).to_have_count(0)


def test_a_good_key_streams_and_a_reload_resumes(page: Page, stack):
    page.goto(stack.url)
    enter_key(page, KEY)
    expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
    expect(page.locator("#key-form")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('tokenrelay.key')") == KEY
    page.select_option("#model", "demo")
    page.fill("#prompt", PROMPT)
    page.fill("#max-tokens", "80")
    page.click("#send")
    expect(page.locator("#job-link")).to_have_text(re.compile("^[0-9a-f]{32}$"))
    wait_until(lambda: tokens_shown(page) >= 10, message="10 tokens on the page")
    page.reload()  # the key stays in this tab's sessionStorage; the answer resumes after its last event
    wait_state(page, "succeeded")
    assert answer_text(page) == "".join(demo_tokens(PROMPT, 80)) and tokens_shown(page) == 80
    streams = [url for url in page.urls if re.search(r"/v1/jobs/[0-9a-f]{32}/stream\?", url)]
    assert len(streams) == 2 and all("token=" in url for url in streams)
    assert "last_event_id=" not in streams[0] and "last_event_id=1-" in streams[1]


def test_a_key_is_not_kept_beyond_the_tab(browser, stack):
    context = browser.new_context()
    try:
        first = context.new_page()
        first.goto(stack.url)
        enter_key(first, KEY)
        expect(first.locator("#model option")).to_have_count(MODEL_COUNT)
        second = context.new_page()  # another tab: sessionStorage is per tab
        second.goto(stack.url)
        expect(second.locator("#key-message")).to_have_text("This gateway needs an API key.")
        first.click("#forget-key")
        expect(first.locator("#key-form")).to_be_visible()
        assert first.evaluate("sessionStorage.getItem('tokenrelay.key')") is None
    finally:
        context.close()


def test_a_dropped_connection_resumes_after_its_stream_token_expired(browser, redis_server, isolated_settings):
    """The gateway dies mid-answer and comes back after the page's stream token expired: EventSource's own
    reconnect is refused (401), and the page carries on with a new token from where it was."""
    settings = {**isolated_settings, "api_keys": f"web:{hash_key(KEY)}", "stream_token_ttl_s": 1}
    with Stack(redis_server.url, settings) as stack:
        context = browser.new_context()
        page = context.new_page()
        streams: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if re.search(r"/stream\?token=", r.url) else None)
        try:
            page.goto(stack.url)
            enter_key(page, KEY)
            expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
            page.select_option("#model", "demo")
            page.fill("#prompt", PROMPT)
            page.fill("#max-tokens", "90")
            page.click("#send")
            wait_until(lambda: tokens_shown(page) >= 10, message="10 tokens on the page")
            port = int(stack.url.rsplit(":", 1)[1])
            stack.gateways[0].signal(signal.SIGKILL)
            stack.gateways[0].process.wait(10)
            wait_state(page, "reconnecting", timeout_s=10)
            time.sleep(1.5)  # the token the page holds has expired by now
            process, _ = start_gateway(stack.env, port=port)
            stack.gateways.append(process)
            wait_state(page, "succeeded", timeout_s=30)
            assert answer_text(page) == "".join(demo_tokens(PROMPT, 90)) and tokens_shown(page) == 90
            tokens = {re.search(r"token=([^&]+)", url).group(1) for url in streams}
            assert len(tokens) >= 2  # the stream went on under a new token
        finally:
            context.close()
