"""Leases only expire when a worker is gone: two workers whose Redis pools are saturated keep every lease,
so no job of a live worker is claimed and every job ends on attempt 1.

The job store answers through a proxy that adds 5 ms each way: with 2 pooled connections per worker, job
starts, finishes and the publisher queue for a connection for seconds, as they did with 900 jobs per
worker on a fast Redis (issue #11), but with a few hundred jobs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tokenrelay.cli.embedded import free_port

from ..support.processes import stack_env, start_gateway, start_worker, wait_for_workers
from .proxy import FaultProxy

JOBS = 300
JOB = {"model": "demo", "prompt": "keep my lease", "params": {"max_tokens": 10, "tokens_per_second": 5}}


async def submit_all(url: str) -> list[str]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        async def one(_: int) -> str:
            response = await http.post("/v1/jobs", json=JOB)
            assert response.status_code == 202, response.text
            return response.json()["id"]
        return await asyncio.gather(*(one(n) for n in range(JOBS)))


@pytest.mark.timeout(400)
def test_saturated_workers_keep_their_leases(redis_server, fault_settings):
    # The workers reach the broker directly (tasks arrive at once) and the job store through the slow
    # proxy, with a pool of 2 connections each; the gateway reaches both directly.
    slow = {**fault_settings, "redis_pool_size": 1, "broker_url": redis_server.url}
    with FaultProxy(redis_server.port) as proxy:
        proxy.set_mode("delay", 0.005)
        ports = [free_port(), free_port()]
        workers = [start_worker(stack_env(proxy.url, **slow, worker_metrics_port=port), concurrency=300,
                                name=f"worker{n}") for n, port in enumerate(ports)]
        gateway, url = start_gateway(stack_env(redis_server.url, **fault_settings))
        try:
            wait_for_workers(url, 2)
            job_ids = asyncio.run(submit_all(url))
            records = wait_for_all(url, job_ids)
            logs = "".join(worker.output() for worker in workers)
            scraped = [scrape(port) for port in ports]
        finally:
            for process in (gateway, *workers):
                process.stop()
    attempts = Counter(record["attempt"] for record in records)
    claimed = logs.count("lost its worker")
    gaps = [metrics.get("tokenrelay_worker_heartbeat_gap_max_seconds", float("nan")) for metrics in scraped]
    print(f"\n[lease starvation] {JOBS} jobs: attempts {dict(attempts)}, leases claimed {claimed}, "
          f"longest heartbeat gap {max(gaps):.2f} s (lease 2 s)")
    assert attempts == {1: JOBS}
    assert claimed == 0 and all(metrics["tokenrelay_worker_leases_claimed_total"] == 0 for metrics in scraped)
    assert max(gaps) < fault_settings["lease_ttl_s"]


def get_json(http: httpx.Client, path: str) -> dict:
    # The polling client's kept-alive connection may be closed by the gateway between polls.
    try:
        return http.get(path).json()
    except httpx.TransportError:
        return http.get(path).json()


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line.split()[0]}


def wait_for_all(url: str, job_ids: list[str]) -> list[dict]:
    deadline = time.monotonic() + 240
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            records = [get_json(http, f"/v1/jobs/{job_id}") for job_id in job_ids]
            statuses = Counter(record["status"] for record in records)
            if statuses == {"succeeded": len(job_ids)}:
                return records
            assert time.monotonic() < deadline, statuses
            time.sleep(3)
