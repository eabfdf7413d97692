"""The web page at `/`, driven in a real headless Chromium (Debian's `chromium`) through Playwright,
against the real stack. What is asserted is what a person sees on the page."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tokenrelay import __version__
from tokenrelay.engine.demo import demo_tokens

from ..support.browser import answer_text, tokens_shown, wait_state
from ..support.processes import LOG_DIR, ROOT, Stack, start_gateway, wait_until
from ..support.settings import MODEL_COUNT

SCREENSHOT = Path(os.environ.get("TOKENRELAY_SCREENSHOT", LOG_DIR / "web-page.png"))
PROMPT = "How do resumable streams work?"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()
    assert page.errors == []


def ask(page: Page, url: str, prompt: str, max_tokens: int) -> str:
    """Open the page, submit a prompt with the demo model; returns the job id the page shows."""
    page.goto(url)
    expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
    page.select_option("#model", "demo")
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.click("#send")
    expect(page.locator("#job-link")).to_have_text(re.compile("^[0-9a-f]{32}$"))
    return page.locator("#job-link").text_content()


def test_tokens_appear_incrementally_then_the_job_completes(page: Page, gateway_url: str):
    job_id = ask(page, gateway_url, PROMPT, 45)
    expect(page.locator("#answer .tok").first).to_be_visible()
    first_seen_at = tokens_shown(page)
    job_status = httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["status"]
    assert first_seen_at < 45 and job_status == "running"  # the first token came before the job ended
    wait_state(page, "succeeded")
    assert answer_text(page) == "".join(demo_tokens(PROMPT, 45))
    assert tokens_shown(page) == 45
    status = page.locator("#status-text").text_content()
    assert status.startswith("Done · 45 tokens · ") and "tokens/s" in status
    assert page.locator("#job-link").get_attribute("href") == f"/v1/jobs/{job_id}/stream"
    assert httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["output"]["text"] == answer_text(page)


def test_token_boundaries_toggle_outlines_each_token(page: Page, gateway_url: str):
    ask(page, gateway_url, "boundaries", 12)
    wait_state(page, "succeeded")
    answer = page.locator("#answer")
    assert "show-boundaries" not in (answer.get_attribute("class") or "")
    page.check("#boundaries")
    expect(answer).to_have_class(re.compile(r"\bshow-boundaries\b"))
    # One outlined span per token event; an event may carry several tokens that came together.
    spans = page.locator("#answer .tok")
    assert 1 <= spans.count() <= 12
    assert "".join(spans.all_text_contents()) == "".join(demo_tokens("boundaries", 12))
    assert answer.get_attribute("data-tokens") == "12"
    border = page.locator("#answer .tok").first.evaluate("el => getComputedStyle(el).borderRightStyle")
    assert border == "solid"


def test_a_failed_job_shows_its_error(page: Page, gateway_url: str):
    page.goto(gateway_url)
    expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
    page.select_option("#model", "openai:error-401")
    page.fill("#prompt", "this will fail")
    page.click("#send")
    wait_state(page, "failed")
    expect(page.locator("#error")).to_have_text("the model provider returned an error")
    assert page.locator("#status-text").text_content().startswith("Failed · 0 tokens")
    # The answer box says the job failed, not that it still waits for a worker.
    expect(page.locator("#answer")).to_have_text("No answer: the job failed.")


@pytest.mark.parametrize("prompt", ["", "   \n  "])
def test_send_with_an_empty_prompt_says_so(page: Page, gateway_url: str, prompt: str):
    page.goto(gateway_url)
    expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
    page.fill("#prompt", prompt)
    page.click("#send")
    expect(page.locator("#error")).to_have_text("Write a prompt first: there is nothing to send.")
    assert page.locator("#job").is_hidden()
    assert page.evaluate("document.activeElement.id") == "prompt"
    assert httpx.get(f"{gateway_url}/v1/jobs").json()["data"] == []


def test_the_page_has_a_favicon(page: Page, gateway_url: str):
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto(gateway_url)
    expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
    response = httpx.get(f"{gateway_url}/favicon.ico")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert response.content.startswith(b"<svg")
    assert failed == []


def test_send_and_stop_stay_on_one_line_at_phone_width(browser, gateway_url: str):
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(gateway_url)
        expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
        stop, send = page.locator("#stop").bounding_box(), page.locator("#send").bounding_box()
        assert abs(stop["y"] - send["y"]) < 2 and stop["height"] == send["height"]  # one row
        assert send["x"] >= stop["x"] + stop["width"]  # Send right of Stop
        assert send["x"] + send["width"] <= 360  # and on screen
        assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing sticks out sideways
    finally:
        context.close()


def test_api_docs_render_offline(page: Page, gateway_url: str):
    """/docs loads Swagger UI from the gateway itself: with every other host unreachable it still renders."""
    outside: list[str] = []

    def only_the_gateway(route):
        if route.request.url.startswith(gateway_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_gateway)
    page.goto(f"{gateway_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(f"tokenrelay {__version__}")
    expect(page.locator(".swagger-ui .opblock-summary-path").first).to_be_visible()
    paths = page.locator(".swagger-ui .opblock-summary-path").all_text_contents()
    assert any("/v1/jobs" in path for path in paths) and any("/v1/chat/completions" in path for path in paths)
    assert outside == []
    redoc = httpx.get(f"{gateway_url}/redoc").text
    assert "/docs-assets/redoc.standalone.js" in redoc and "https://" not in redoc


def test_input_the_gateway_refuses_shows_its_message(page: Page, gateway_url: str):
    page.goto(gateway_url)
    expect(page.locator("#model option")).to_have_count(MODEL_COUNT)
    page.fill("#prompt", "x" * 200_001)  # over the gateway's max_message_chars
    page.click("#send")
    expect(page.locator("#error")).to_have_text("message 0 is longer than 200000 characters")
    assert page.locator("#job").is_hidden()
    assert httpx.get(f"{gateway_url}/v1/jobs").json()["data"] == []


def test_stop_cancels_the_job(page: Page, gateway_url: str):
    job_id = ask(page, gateway_url, "a long answer", 3000)
    expect(page.locator("#answer .tok").nth(2)).to_be_visible()
    page.click("#stop")
    wait_state(page, "cancelled")
    assert page.locator("#status-text").text_content().startswith("Stopped")
    assert httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["status"] == "cancelled"
    shown = tokens_shown(page)
    assert 3 <= shown < 3000
    expect(page.locator("#stop")).to_be_disabled()


def test_reload_mid_answer_resumes_from_the_last_event(page: Page, gateway_url: str):
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/stream" in request.url else None)
    job_id = ask(page, gateway_url, PROMPT, 70)
    wait_until(lambda: tokens_shown(page) >= 10, message="10 tokens on the page")
    page.reload()
    wait_state(page, "succeeded")
    assert page.locator("#job-link").text_content() == job_id
    assert answer_text(page) == "".join(demo_tokens(PROMPT, 70))  # nothing missing, nothing doubled
    assert tokens_shown(page) == 70
    assert len(streams) == 2 and "last_event_id=" not in streams[0] and "last_event_id=1-" in streams[1]


def test_dropped_connection_resumes(browser, redis_server, isolated_settings):
    """The gateway is killed mid-answer and comes back on the same port: the page carries on."""
    with Stack(redis_server.url, isolated_settings) as stack:
        context = browser.new_context()
        page = context.new_page()
        try:
            ask(page, stack.url, PROMPT, 90)
            wait_until(lambda: tokens_shown(page) >= 10, message="10 tokens on the page")
            port = int(stack.url.rsplit(":", 1)[1])
            stack.gateways[0].signal(signal.SIGKILL)
            stack.gateways[0].process.wait(10)
            wait_state(page, "reconnecting", timeout_s=10)
            process, _ = start_gateway(stack.env, port=port)
            stack.gateways.append(process)
            wait_state(page, "succeeded", timeout_s=30)
            assert answer_text(page) == "".join(demo_tokens(PROMPT, 90))
            assert tokens_shown(page) == 90
        finally:
            context.close()


def test_screenshot_of_a_finished_answer(page: Page, gateway_url: str):
    ask(page, gateway_url, "Show me what the page looks like", 60)
    wait_state(page, "succeeded")
    page.check("#boundaries")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 10_000


def test_every_page_file_ships_in_the_package():
    """The page is served from the installed package: each of its files must match pyproject's package-data."""
    import fnmatch
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    web = ROOT / "api" / "web"
    files = [path.relative_to(ROOT / "api").as_posix() for path in web.iterdir() if path.is_file()]
    assert {"web/index.html", "web/app.js", "web/style.css", "web/favicon.svg"} <= set(files)
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in files)
