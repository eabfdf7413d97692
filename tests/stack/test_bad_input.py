"""Bad input gets a clear 4xx with a JSON error body naming the problem; never a 5xx."""

from __future__ import annotations

import httpx
import pytest

from ..support.http import assert_error, post

VALID = {"model": "demo", "prompt": "hi", "params": {"max_tokens": 2, "tokens_per_second": 0}}


def test_malformed_json(gateway_url):
    response = post(gateway_url, content=b'{"model": "demo", "prompt": ', headers={"content-type": "application/json"})
    assert_error(response, 400, mentions="not valid JSON")


@pytest.mark.parametrize("body, mentions", [
    ({"model": "demo"}, "exactly one of"),
    ({"model": "demo", "messages": []}, "must not be empty"),
    ({"model": "demo", "messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
    ({"model": "demo", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": "demo", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "exactly one of"),
    ({"model": "demo", "prompt": "x", "params": {"max_tokens": 0}}, "params.max_tokens"),
    ({"model": "demo", "prompt": "x", "params": {"max_tokens": 10**30}}, "max_tokens"),
    ({"model": "demo", "prompt": "x", "params": {"temperature": "hot"}}, "params.temperature"),
    ({"model": "demo", "prompt": "x", "params": {"top_k": 3}}, "params.top_k"),
    ({"model": "demo", "prompt": "x", "base_url": "http://evil"}, "base_url"),
    ([1, 2, 3], "body"),
])
def test_invalid_bodies(gateway_url, body, mentions):
    assert_error(post(gateway_url, json=body), 400, mentions=mentions)


def test_max_tokens_over_the_server_limit(gateway_url):
    error = assert_error(post(gateway_url, json={**VALID, "params": {"max_tokens": 10**6}}), 400,
                         mentions="between 1 and", param="params.max_tokens")
    assert "16384" in error["message"]


def test_unknown_model_lists_the_allowed_ones(gateway_url):
    error = assert_error(post(gateway_url, json={**VALID, "model": "gpt-5-secret"}), 400, param="model")
    assert "demo" in error["message"] and "openai:echo" in error["message"]


def test_body_over_the_limit_is_a_413_even_without_content_length(gateway_url):
    def chunks():
        yield b'{"model": "demo", "prompt": "'
        for _ in range(1_100):
            yield b"x" * 1_000
        yield b'"}'

    response = post(gateway_url, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, mentions="larger than", param="max_body_bytes")


def test_deeply_nested_metadata_is_refused_cleanly(gateway_url):
    nested = "[" * 100_000 + "]" * 100_000
    response = post(gateway_url, content=f'{{"model":"demo","prompt":"x","metadata":{{"a":{nested}}}}}'.encode(),
                    headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


@pytest.mark.parametrize("path", ["/v1/jobs/{id}", "/v1/jobs/{id}/stream"])
@pytest.mark.parametrize("job_id, status", [
    ("not-an-id", 400), ("0" * 31, 400), ("G" * 32, 400), ("0123456789abcdef0123456789abcdef", 404),
])
def test_job_ids(gateway_url, path, job_id, status):
    response = httpx.get(gateway_url + path.format(id=job_id))
    assert_error(response, status, param="job_id")


@pytest.mark.parametrize("job_id, status", [("nope", 400), ("0123456789abcdef0123456789abcdef", 404)])
def test_cancel_bad_or_unknown_job(gateway_url, job_id, status):
    assert_error(httpx.post(f"{gateway_url}/v1/jobs/{job_id}/cancel"), status, param="job_id")


def test_unknown_route_is_a_json_404(gateway_url):
    assert_error(httpx.get(f"{gateway_url}/v2/nothing"), 404)


def test_openapi_documents_the_api_and_its_errors(gateway_url):
    schema = httpx.get(f"{gateway_url}/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/stream", "/v1/jobs/{job_id}/cancel",
                 "/health", "/ready"):
        assert path in paths
    assert {"400", "413", "503"} <= set(paths["/v1/jobs"]["post"]["responses"])
    assert "404" in paths["/v1/jobs/{job_id}/stream"]["get"]["responses"]
    assert httpx.get(f"{gateway_url}/docs").status_code == 200
