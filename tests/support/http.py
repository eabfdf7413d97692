"""HTTP helpers: a job submit and the shape every error body must have."""

from __future__ import annotations

import httpx


def assert_error(response: httpx.Response, status: int, *, mentions: str = "", param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert mentions.lower() in error["message"].lower()
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in response.text and "File \"" not in response.text
    return error


def post(url: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/jobs", timeout=10, **kwargs)
