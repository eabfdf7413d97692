"""Shared steps of the fault scenarios."""

from __future__ import annotations

import time

import httpx

from ..support.processes import wait_until
from .reader import ResilientReader

SLOW_JOB = {"model": "demo", "prompt": "survive the fault", "params": {"max_tokens": 60, "tokens_per_second": 20}}


def submit(url: str, body: dict | None = None, headers: dict | None = None) -> str:
    response = httpx.post(f"{url}/v1/jobs", json=body or SLOW_JOB, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def record(url: str, job_id: str) -> dict:
    response = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def tokens_seen(reader: ResilientReader) -> int:
    return sum(1 for e in reader.events if e.event == "token")


def readers_mid_stream(urls: list[str], job_id: str, count: int = 3, tokens: int = 10,
                       deadline_s: float = 60) -> list[ResilientReader]:
    readers = [ResilientReader(urls, job_id, deadline_s=deadline_s).start() for _ in range(count)]
    wait_until(lambda: all(tokens_seen(r) >= tokens for r in readers), timeout_s=20,
               message=f"{count} readers to get {tokens} tokens")
    return readers


def wait_ready(url: str, timeout_s: float = 30) -> float:
    started = time.monotonic()

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(ready, timeout_s=timeout_s, interval_s=0.05, message="/ready")
    return time.monotonic() - started


def time_to_next_token(readers: list[ResilientReader], timeout_s: float = 30) -> float:
    """Seconds until every reader has received something new (or ended)."""
    started = time.monotonic()
    counts = [len(r.events) for r in readers]
    wait_until(lambda: all(len(r.events) > n or r.ended for r, n in zip(readers, counts)), timeout_s=timeout_s,
               interval_s=0.02, message="readers to receive events again")
    return time.monotonic() - started
