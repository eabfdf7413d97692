"""Scenario 9: what one delivered token costs while one gateway follows 10, 100 and 1,000 live jobs at the
same total token rate (one reader per job), and what each unit costs for the sizing table.

The window is measured in steady state: every job is running and every reader has its first token
before it opens, so submits, subscriptions and history reads are not in it.
"""

from __future__ import annotations

import asyncio
import time

import redis

from . import load
from .procs import TokenRelay, cpu_seconds

HOST = "127.0.0.1"
COMMANDS = ("xadd", "xrevrange", "spublish", "xrange", "evalsha", "eval", "zadd", "hget", "time")


def _redis_cpu_and_calls(url: str) -> tuple[float, dict[str, int], int]:
    client = redis.Redis.from_url(url)
    try:
        cpu = client.info("cpu")
        stats = client.info("commandstats")
        memory = client.info("memory")["used_memory"]
    finally:
        client.close()
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    return cpu["used_cpu_sys"] + cpu["used_cpu_user"], calls, memory


async def _submit(impl: TokenRelay, tokens: int, tps: float) -> str:
    body = {"model": "demo", "prompt": "relay cost", "params": {"max_tokens": tokens, "tokens_per_second": tps}}
    while True:
        status, job = await load.post_json(HOST, impl.port, "/v1/jobs", body)
        if status == 202:
            return job["id"]
        await asyncio.sleep(0.5)  # shed (429/503): retry like any client


async def one_size(impl: TokenRelay, live_jobs: int, total_tokens_per_s: float, window_s: float) -> dict:
    tps = total_tokens_per_s / live_jobs
    tokens = int(tps * (window_s + 120))  # long enough to outlast the warm-up; cancelled after the window
    job_ids = []
    for start in range(0, live_jobs, 50):
        job_ids += await asyncio.gather(*(_submit(impl, tokens, tps) for _ in range(min(50, live_jobs - start))))
    readings = [load.Reading() for _ in job_ids]
    tasks = [asyncio.create_task(load.read_sse(HOST, impl.port, f"/v1/jobs/{job_id}/stream", reading=reading))
             for job_id, reading in zip(job_ids, readings)]
    deadline = time.monotonic() + 120
    while sum(r.tokens > 0 for r in readings) < live_jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    gateway_pid, worker_pids = impl.gateway.pid, [p.pid for p in impl.processes if p is not impl.gateway]
    cpu0, calls0, _ = _redis_cpu_and_calls(impl.redis.url)
    gateway0, workers0 = cpu_seconds(gateway_pid), sum(cpu_seconds(pid) for pid in worker_pids)
    tokens0, started = sum(r.tokens for r in readings), time.monotonic()
    await asyncio.sleep(window_s)
    cpu1, calls1, memory = _redis_cpu_and_calls(impl.redis.url)
    gateway1, workers1 = cpu_seconds(gateway_pid), sum(cpu_seconds(pid) for pid in worker_pids)
    tokens1, elapsed = sum(r.tokens for r in readings), time.monotonic() - started
    delivered = max(tokens1 - tokens0, 1)
    for job_id in job_ids:
        await load.request(HOST, impl.port, "POST", f"/v1/jobs/{job_id}/cancel", b"")
    await asyncio.wait(tasks, timeout=60)
    for task in tasks:
        task.cancel()
    figures = {
        "live_jobs": live_jobs,
        "tokens_per_s": delivered / elapsed,
        "redis_cpu_us_per_token": (cpu1 - cpu0) / delivered * 1e6,
        "gateway_cpu_us_per_token": (gateway1 - gateway0) / delivered * 1e6,
        "worker_cpu_us_per_token": (workers1 - workers0) / delivered * 1e6,
        "redis_memory_mb": memory / 2**20,
    }
    for name in COMMANDS:
        figures[f"{name}_per_token"] = (calls1.get(name, 0) - calls0.get(name, 0)) / delivered
    return figures


async def relay_cost(impl: TokenRelay, sizes) -> dict:
    results = {}
    for live in sizes.relay_live_jobs:
        results[live] = await one_size(impl, live, sizes.relay_tokens_per_s, sizes.relay_window_s)
        await asyncio.sleep(2.0)
    base = results[sizes.relay_live_jobs[0]]["redis_cpu_us_per_token"]
    summary = {f"redis_cpu_us_per_token_at_{live}": figures["redis_cpu_us_per_token"]
               for live, figures in results.items()}
    summary["worst_ratio_to_first"] = max(f["redis_cpu_us_per_token"] for f in results.values()) / base
    summary["runs"] = list(results.values())
    return summary
