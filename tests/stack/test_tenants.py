"""Keys do not see each other: job lists, /metrics, and the cost of asking about another key's job."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
import redis

from api.auth import hash_key

from ..support.http import assert_error
from ..support.processes import Stack

KEYS = {"alice": "tr_alice-tenant-key", "bob": "tr_bob-tenant-key", "root": "tr_root-tenant-key"}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def stack(redis_server, stack_settings):
    entries = ",".join(f"{name}:{hash_key(key)}" + (":admin" if name == "root" else "") for name, key in KEYS.items())
    settings = {**stack_settings, "key_prefix": "tokenrelay-tenants", "queue_name": "tokenrelay-tenants",
                "api_keys": entries}
    # No worker: jobs stay queued, which is all these tests need.
    with Stack(redis_server.url, settings, workers=0) as stack:
        yield stack


def submit(url: str, name: str, prompt: str = "hi") -> str:
    response = httpx.post(f"{url}/v1/jobs", headers=bearer(name), timeout=10,
                          json={"model": "demo", "prompt": prompt, "params": {"max_tokens": 1}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def listed(url: str, name: str, limit: int) -> list[str]:
    response = httpx.get(f"{url}/v1/jobs", params={"limit": limit}, headers=bearer(name), timeout=10)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


def test_the_limit_counts_each_keys_own_jobs(stack):
    bob_job = submit(stack.url, "bob")
    alice_jobs = [submit(stack.url, "alice") for _ in range(25)]
    assert listed(stack.url, "bob", 20) == [bob_job]
    assert listed(stack.url, "alice", 20) == alice_jobs[::-1][:20]
    everything = listed(stack.url, "root", 200)
    assert bob_job in everything and set(alice_jobs) <= set(everything)


def test_metrics_need_an_admin_key(stack):
    assert_error(httpx.get(f"{stack.url}/metrics", headers=bearer("alice")), 403, mentions="admin", param="Authorization")
    assert_error(httpx.get(f"{stack.url}/metrics"), 401)
    response = httpx.get(f"{stack.url}/metrics", headers=bearer("root"))
    assert response.status_code == 200 and "tokenrelay_jobs_submitted_total" in response.text


def _redis_reply_bytes(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_output_bytes"])


def test_a_foreign_job_costs_what_an_unknown_one_costs(stack, redis_server):
    # A record holds the whole request: 150 KB here. Reading it before the owner check would show.
    foreign = submit(stack.url, "alice", prompt="x" * 150_000)
    unknown = "0" * 32
    client = redis.Redis.from_url(redis_server.url)
    times: dict[str, list[float]] = {"foreign": [], "unknown": []}
    reply_bytes: dict[str, int] = {"foreign": 0, "unknown": 0}
    with httpx.Client(base_url=stack.url, headers=bearer("bob"), timeout=10) as http:
        for _ in range(60):
            for label, job_id in (("foreign", foreign), ("unknown", unknown)):
                before = _redis_reply_bytes(client)
                started = time.perf_counter()
                response = http.get(f"/v1/jobs/{job_id}")
                times[label].append(time.perf_counter() - started)
                reply_bytes[label] += _redis_reply_bytes(client) - before
                assert response.status_code == 404
                assert response.json()["error"]["message"] == http.get(f"/v1/jobs/{unknown}").json()["error"][
                    "message"].replace(unknown, job_id)
    client.close()
    # Redis sends as little for a foreign job as for an unknown one (plus the other replies of
    # the moment: heartbeats, the INFO itself): never the 150 KB record.
    assert reply_bytes["foreign"] < reply_bytes["unknown"] + 60 * 2_000, reply_bytes
    foreign_ms, unknown_ms = (statistics.median(times[k]) * 1000 for k in ("foreign", "unknown"))
    assert foreign_ms < unknown_ms * 1.5 + 1.0, (foreign_ms, unknown_ms)
