"""The benchmark's scenarios, each run against every implementation it applies to."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import redis

from . import load
from .procs import (
    Direct,
    Implementation,
    Naive,
    TokenRelay,
    rss_bytes,
    tcp_connections_to,
)

HOST = "127.0.0.1"
MAX_REFUSALS = 10


@dataclass
class Sizes:
    throughput_jobs: int = 64
    throughput_tokens: int = 2000
    latency_jobs: int = 1000
    latency_tokens: int = 50
    fanout_readers: int = 1000
    fanout_tokens: int = 100
    ttft_jobs: int = 200
    idle_streams: int = 10_000
    idle_jobs: int = 100
    relay_live_jobs: tuple[int, ...] = (10, 100, 1000)
    relay_tokens_per_s: float = 1000.0
    relay_window_s: float = 15.0
    sizing_readers: int = 200
    sizing_jobs: int = 50
    burst_submits: int = 2000
    starvation_jobs: int = 1600

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(throughput_jobs=32, throughput_tokens=1000, latency_jobs=200, latency_tokens=30,
                   fanout_readers=200, fanout_tokens=50, ttft_jobs=50, idle_streams=1000, idle_jobs=20,
                   relay_window_s=5.0,
                   burst_submits=500, starvation_jobs=300)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- how each implementation runs one job with one reader ----------------------------------------------

async def submit_and_read(impl: Implementation, tokens: int, tps: float) -> load.Reading:
    if isinstance(impl, TokenRelay):  # submit and read in one request (`stream: true`)
        body = {"model": "demo", "prompt": "bench", "stream": True,
                "params": {"max_tokens": tokens, "tokens_per_second": tps}}
        refusals = 0
        while True:  # like any client: an overloaded gateway sheds load with 429/503 and Retry-After
            try:
                reading = await load.read_sse(HOST, impl.port, "/v1/jobs", body=body)
                reading.refusals = refusals
                return reading
            except load.Refused as refused:
                refusals += 1
                if refused.status not in (429, 503) or refusals > MAX_REFUSALS:
                    raise
                await asyncio.sleep(refused.retry_after_s)
    path = "/stream" if isinstance(impl, Direct) else "/run"
    return await load.read_sse(HOST, impl.port, f"{path}?max_tokens={tokens}&tps={tps}")


# -- 1. throughput ------------------------------------------------------------------------------------

async def throughput(impl: Implementation, sizes: Sizes) -> dict:
    cpu_before = impl.cpu()
    started = time.time()
    readings = await asyncio.gather(*(submit_and_read(impl, sizes.throughput_tokens, 0)
                                      for _ in range(sizes.throughput_jobs)))
    wall = max(r.ended_at or time.time() for r in readings) - started
    tokens = sum(r.tokens for r in readings)
    cpu = impl.cpu() - cpu_before
    return {
        "tokens_per_s": tokens / wall,
        "wall_s": wall,
        "tokens": tokens,
        "complete_jobs": sum(r.tokens == sizes.throughput_tokens and r.end_status == "succeeded" for r in readings),
        "events_per_token": sum(r.events for r in readings) / max(tokens, 1),
        "cpu_us_per_token": cpu / max(tokens, 1) * 1e6,
    }


# -- 2. latency under load ----------------------------------------------------------------------------

async def latency(impl: Implementation, sizes: Sizes) -> dict:
    readings = await asyncio.gather(*(submit_and_read(impl, sizes.latency_tokens, 10)
                                      for _ in range(sizes.latency_jobs)), return_exceptions=True)
    ok = [r for r in readings if isinstance(r, load.Reading)]
    lags = [lag for r in ok for lag in r.lags_s]
    return {
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags) * 1000 if lags else float("nan"),
        "jobs_complete": sum(r.tokens == sizes.latency_tokens for r in ok),
        "jobs": sizes.latency_jobs,
        "submits_refused": sum(r.refusals for r in ok),
    }


# -- 3. fan-out ---------------------------------------------------------------------------------------

def _commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(stats["calls"] for stats in client.info("commandstats").values())
    finally:
        client.close()


async def _fanout_once(impl: Implementation, readers: int, tokens: int, tps: float) -> tuple[list, int]:
    if isinstance(impl, TokenRelay):
        status, job = await load.post_json(HOST, impl.port, "/v1/jobs", {
            "model": "demo", "prompt": "bench", "params": {"max_tokens": tokens, "tokens_per_second": tps}})
        path = f"/v1/jobs/{job['id']}/stream"
        commands_before = _commands(impl.redis.url)
    else:
        job_id = f"fanout{time.monotonic_ns()}"
        path = f"/stream/{job_id}"
        commands_before = _commands(impl.redis.url)
    connected = [asyncio.Event() for _ in range(readers)]
    tasks = [asyncio.create_task(load.read_sse(HOST, impl.port, path, connected=c)) for c in connected]
    await asyncio.gather(*(c.wait() for c in connected))
    if isinstance(impl, Naive):
        await asyncio.sleep(0.5)  # let every subscription land before the job starts
        await load.request(HOST, impl.port, "POST", f"/jobs/{job_id}?max_tokens={tokens}&tps={tps}", b"")
    readings = await asyncio.gather(*tasks)
    return readings, _commands(impl.redis.url) - commands_before


async def fanout(impl: Implementation, sizes: Sizes) -> dict:
    """One job, many readers. Redis commands = a * tokens + b * readers: a run with one reader gives a."""
    tps, tokens = 50, sizes.fanout_tokens
    _, commands_alone = await _fanout_once(impl, 1, tokens, tps)
    readings, commands = await _fanout_once(impl, sizes.fanout_readers, tokens, tps)
    lags = [lag for r in readings for lag in r.lags_s]
    return {
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "redis_commands_per_token_1_reader": commands_alone / tokens,
        "redis_commands_per_token": commands / tokens,
        "redis_commands_per_added_reader": (commands - commands_alone) / max(sizes.fanout_readers - 1, 1),
        "readers_complete": sum(r.tokens == tokens for r in readings),
        "readers": sizes.fanout_readers,
    }


# -- 4. time to first token ---------------------------------------------------------------------------

async def first_token(impl: Implementation, sizes: Sizes) -> dict:
    overheads = []
    for _ in range(sizes.ttft_jobs):
        started = time.time()
        reading = await submit_and_read(impl, 1, 0)  # tps 0: the model's own first-token delay is 0
        overheads.append(reading.first_token_at - started)
    return {"ttft_p50_ms": percentile(overheads, 0.5) * 1000, "ttft_p99_ms": percentile(overheads, 0.99) * 1000}


# -- 5. idle readers ----------------------------------------------------------------------------------

async def idle_readers(impl: TokenRelay, sizes: Sizes) -> dict:
    """Open streams of queued jobs (no worker takes them: they are on a queue nobody consumes)."""
    for process in impl.processes:
        if process is not impl.gateway:
            process.stop()
    jobs = []
    for _ in range(sizes.idle_jobs):
        _, job = await load.post_json(HOST, impl.port, "/v1/jobs", {"model": "demo", "prompt": "idle"})
        jobs.append(job["id"])
    await asyncio.sleep(0.5)
    rss_before = rss_bytes(impl.gateway.pid)
    connected = [asyncio.Event() for _ in range(sizes.idle_streams)]
    tasks = []
    for index, event in enumerate(connected):
        path = f"/v1/jobs/{jobs[index % len(jobs)]}/stream"
        tasks.append(asyncio.create_task(load.read_sse(HOST, impl.port, path, connected=event)))
        if index % 500 == 499:
            await asyncio.gather(*(c.wait() for c in connected[: index + 1]))
    await asyncio.gather(*(c.wait() for c in connected))
    await asyncio.sleep(1.0)
    rss_after = rss_bytes(impl.gateway.pid)
    connections = tcp_connections_to(impl.gateway.pid, impl.redis.port)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": sizes.idle_streams,
        "gateway_kb_per_stream": (rss_after - rss_before) / sizes.idle_streams / 1024,
        "gateway_redis_connections": connections,
    }


def median_of(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {key: statistics.median(run[key] for run in runs) for key in keys}
