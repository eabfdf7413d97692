"""Mistakes a new user makes in the first requests get an answer that says what to change."""

from __future__ import annotations

import json

import httpx
import pytest

from ..support.http import assert_error, post

BODY = {"model": "demo", "prompt": "hi", "params": {"max_tokens": 2, "tokens_per_second": 0}}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("path, body", [("/v1/jobs", BODY), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_json_sent_without_the_json_content_type_names_the_header(gateway_url, path, body, content_type):
    # None: no header at all; form-urlencoded: what `curl -d '{...}'` sends without -H 'content-type: ...'.
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(gateway_url + path, content=json.dumps(body).encode(), headers=headers, timeout=10)
    assert response.request.headers.get("content-type") == content_type
    error = assert_error(response, 400, mentions="Content-Type: application/json")
    assert "must be JSON" in error["message"] and "dictionary" not in error["message"]


def test_json_with_a_json_content_type_and_charset_is_accepted(gateway_url):
    response = post(gateway_url, content=json.dumps(BODY).encode(),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("body, param", [
    ({**BODY, "prompt": "   "}, "prompt"),
    ({**BODY, "prompt": " \n\t "}, "prompt"),
    ({"model": "demo", "messages": [{"role": "user", "content": "  \n"}]}, "messages.0.content"),
])
def test_whitespace_only_prompt_is_refused(gateway_url, body, param):
    error = assert_error(post(gateway_url, json=body), 400, mentions="whitespace", param=param)
    assert error["type"] == "invalid_request_error"


def test_whitespace_only_chat_messages_are_refused(gateway_url):
    body = {**CHAT, "messages": [{"role": "system", "content": " "}, {"role": "user", "content": "\n\n"}]}
    response = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, timeout=10)
    assert_error(response, 400, mentions="messages` must hold some text")


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_max_tokens_over_the_limit_names_the_chat_field(gateway_url, field):
    body = {"model": "demo", "messages": CHAT["messages"], field: 10**6}
    response = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, timeout=10)
    error = assert_error(response, 400, mentions=f"{field} must be between 1 and 16384", param=field)
    assert "params" not in error["message"]


def test_chat_max_tokens_of_the_wrong_type_names_the_chat_field(gateway_url):
    response = httpx.post(f"{gateway_url}/v1/chat/completions", json={**CHAT, "max_tokens": "abc"}, timeout=10)
    assert_error(response, 400, param="max_tokens")


@pytest.mark.parametrize("body", [
    {**BODY, "prompt": "lone \ud800 surrogate"},
    {"model": "demo", "messages": [{"role": "user", "content": "lone \udfff surrogate"}]},
])
def test_text_that_is_not_unicode_is_a_400(gateway_url, body):
    raw = json.dumps(body).encode()  # json.dumps escapes the lone surrogate as \ud800: valid JSON, invalid text
    response = post(gateway_url, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, mentions="unicode")
