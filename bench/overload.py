"""Overload scenarios (issue #11): a burst of submits on one gateway, and a load that starves the
workers' Redis pools while their leases must hold. Each reports what was accepted, what was refused
and why, jobs re-run (attempt > 1) or lost, and the delivery lag of what streamed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx

from . import load
from .procs import TokenRelay
from .scenarios import HOST, percentile

JOB_WAIT_S = 300.0


async def _records(port: int, job_ids: list[str]) -> list[dict]:
    """Every job's record once all are finished (or JOB_WAIT_S passed)."""
    deadline = time.monotonic() + JOB_WAIT_S
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30,
                                 limits=httpx.Limits(max_connections=50)) as http:
        while True:
            records = await asyncio.gather(*(http.get(f"/v1/jobs/{job_id}") for job_id in job_ids))
            records = [r.json() if r.status_code == 200 else {"status": "lost"} for r in records]
            if all(r["status"] in ("succeeded", "failed", "cancelled", "lost") for r in records) \
                    or time.monotonic() > deadline:
                return records


def _worker_figures(impl: TokenRelay) -> dict:
    figures = {"leases_claimed": 0.0, "heartbeat_gap_max_s": 0.0}
    for port in impl.metrics_ports:
        for line in httpx.get(f"http://{HOST}:{port}/metrics", timeout=10).text.splitlines():
            if line.startswith("tokenrelay_worker_leases_claimed_total "):
                figures["leases_claimed"] += float(line.split()[1])
            elif line.startswith("tokenrelay_worker_heartbeat_gap_max_seconds "):
                figures["heartbeat_gap_max_s"] = max(figures["heartbeat_gap_max_s"], float(line.split()[1]))
    return figures


# -- 6. a burst of submits ----------------------------------------------------------------------------

async def _burst_one(port: int, number: int, job: dict) -> dict:
    if number % 4 == 0:  # one in four reads its job's stream in the submit's response
        try:
            reading = await load.read_sse(HOST, port, "/v1/jobs", body={**job, "stream": True})
        except load.Refused as refused:
            return {"refused": refused.code, "retry_after": refused.retry_after_s}
        return {"reading": reading}
    status, headers, data = await load.exchange(HOST, port, "POST", "/v1/jobs", json.dumps(job).encode(),
                                                {"content-type": "application/json"})
    if status == 202:
        return {"job_id": json.loads(data)["id"]}
    return {"refused": load.error_code(data) or str(status), "retry_after": float(headers.get("retry-after", "0"))}


async def burst(impl: TokenRelay, sizes) -> dict:
    """`burst_submits` submits at once, jobs of 20 tokens at 10 tokens/s."""
    job = {"model": "demo", "prompt": "burst", "params": {"max_tokens": 20, "tokens_per_second": 10}}
    started = time.monotonic()
    outcomes = await asyncio.gather(*(_burst_one(impl.port, n, job) for n in range(sizes.burst_submits)))
    answered_s = time.monotonic() - started
    readings = [o["reading"] for o in outcomes if "reading" in o]
    refused = Counter(o["refused"] for o in outcomes if "refused" in o)
    records = await _records(impl.port, [o["job_id"] for o in outcomes if "job_id" in o])
    lags = [lag for r in readings for lag in r.lags_s]
    return {
        "submits": sizes.burst_submits,
        "accepted": len(readings) + len(records),
        **{f"refused_{code}": count for code, count in sorted(refused.items())},
        "retry_after_min_s": min((o["retry_after"] for o in outcomes if "refused" in o), default=float("nan")),
        "empty_accepted_streams": sum(r.end_status is None for r in readings),
        "jobs_lost": sum(r["status"] != "succeeded" for r in records)
                     + sum(r.end_status != "succeeded" for r in readings),
        "reruns": sum(r.get("attempt", 1) > 1 for r in records),
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "wall_s": answered_s,
    }


# -- 7. lease starvation ------------------------------------------------------------------------------

async def _submit_retrying(port: int, job: dict) -> str:
    while True:
        status, headers, data = await load.exchange(HOST, port, "POST", "/v1/jobs", json.dumps(job).encode(),
                                                    {"content-type": "application/json"})
        if status == 202:
            return json.loads(data)["id"]
        await asyncio.sleep(float(headers.get("retry-after", "1")))


async def lease_starvation(impl: TokenRelay, sizes) -> dict:
    """`starvation_jobs` jobs x 100 tokens at 20 tokens/s on two workers sized to run them all at once,
    each with a Redis pool of 10 (the setting issue #11 measured), every job followed by a reader."""
    job = {"model": "demo", "prompt": "starve", "params": {"max_tokens": 100, "tokens_per_second": 20}}
    job_ids = await asyncio.gather(*(_submit_retrying(impl.port, job) for _ in range(sizes.starvation_jobs)))
    readings = await asyncio.gather(*(load.read_sse(HOST, impl.port, f"/v1/jobs/{job_id}/stream")
                                      for job_id in job_ids), return_exceptions=True)
    readings = [r for r in readings if isinstance(r, load.Reading)]
    records = await _records(impl.port, list(job_ids))
    lags = [lag for r in readings for lag in r.lags_s]
    return {
        "jobs": sizes.starvation_jobs,
        "succeeded": sum(r["status"] == "succeeded" for r in records),
        "reruns": sum(r.get("attempt", 1) > 1 for r in records),
        **_worker_figures(impl),
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
    }
