"""Scenario 10: per-unit costs measured on this machine, and from them a sizing table for 1k, 10k and 100k
concurrent streams at 30 tokens/s with 2 readers each (README "Scaling").

Costs per token and per live job come from scenario 9 (`relay_cost`); this adds what a reader costs
(gateway CPU per token per extra reader, Redis commands per joining reader) and Redis memory per stream
and per retained token.
"""

from __future__ import annotations

import asyncio
import math
import time

import redis

from . import load
from tokenrelay.core.keys import Keys

from .procs import TokenRelay, cpu_seconds

HOST = "127.0.0.1"
DEFAULT_PREFIX = "tokenrelay"  # the bench's stack runs with the default key prefix
STREAM_RATE = 30  # tokens/s per stream
READERS = 2
TOKENS_PER_JOB = 500  # a typical answer, ~17 s at 30 tokens/s
# Usable share of one core before latency suffers: a Redis shard is one thread; Python processes too.
CORE_BUDGET = 0.6
JOBS_PER_WORKER_PROCESS = 300  # README "Workers per core": past this, add processes rather than threads


def _redis(url: str) -> tuple[float, int, int]:
    client = redis.Redis.from_url(url)
    try:
        cpu = client.info("cpu")
        calls = sum(v["calls"] for v in client.info("commandstats").values())
        return cpu["used_cpu_sys"] + cpu["used_cpu_user"], calls, client.info("memory")["used_memory"]
    finally:
        client.close()


async def _run_jobs(impl: TokenRelay, jobs: int, tokens: int, tps: float) -> list[str]:
    body = {"model": "demo", "prompt": "size", "params": {"max_tokens": tokens, "tokens_per_second": tps}}
    job_ids = [job["id"] for _, job in await asyncio.gather(*(load.post_json(HOST, impl.port, "/v1/jobs", body)
                                                                for _ in range(jobs)))]
    await asyncio.gather(*(load.read_sse(HOST, impl.port, f"/v1/jobs/{job_id}/stream") for job_id in job_ids))
    return job_ids


def _bytes_per_job(url: str, keys: Keys, job_ids: list[str]) -> float:
    client = redis.Redis.from_url(url)
    try:
        total = sum(client.memory_usage(key, samples=0) or 0
                    for job_id in job_ids for key in (keys.events(job_id), keys.meta(job_id)))
    finally:
        client.close()
    return total / len(job_ids)


async def memory_costs(impl: TokenRelay, jobs: int) -> dict:
    """Redis memory per finished job (record + stream, `MEMORY USAGE`) and per retained token: two job
    lengths, a line. Paced at the table's 30 tokens/s, so each token is its own entry, as in production."""
    keys = Keys(DEFAULT_PREFIX)
    points = []
    for tokens in (10, 300):
        job_ids = await _run_jobs(impl, jobs, tokens, STREAM_RATE)
        points.append((tokens, _bytes_per_job(impl.redis.url, keys, job_ids)))
    (t1, m1), (t2, m2) = points
    per_token = (m2 - m1) / (t2 - t1)
    return {"redis_bytes_per_token": per_token, "redis_bytes_per_job": m1 - per_token * t1}


async def reader_costs(impl: TokenRelay, readers: int, tokens: int = 300, tps: float = 50) -> dict:
    """Gateway CPU per token per extra reader and Redis commands per joining reader: one job, 1 vs N readers."""
    figures = []
    for count in (1, readers):
        status, job = await load.post_json(HOST, impl.port, "/v1/jobs", {
            "model": "demo", "prompt": "readers", "params": {"max_tokens": tokens, "tokens_per_second": tps}})
        cpu0, calls0, _ = _redis(impl.redis.url)
        gateway0 = cpu_seconds(impl.gateway.pid)
        connected = [asyncio.Event() for _ in range(count)]
        readings = await asyncio.gather(*(load.read_sse(HOST, impl.port, f"/v1/jobs/{job['id']}/stream", connected=c)
                                          for c in connected))
        cpu1, calls1, _ = _redis(impl.redis.url)
        figures.append({"gateway_s": cpu_seconds(impl.gateway.pid) - gateway0, "redis_s": cpu1 - cpu0,
                        "calls": calls1 - calls0, "delivered": sum(r.tokens for r in readings)})
    one, many = figures
    extra = readers - 1
    return {
        "gateway_cpu_us_per_token_per_extra_reader": (many["gateway_s"] - one["gateway_s"]) / (tokens * extra) * 1e6,
        "redis_commands_per_joining_reader": (many["calls"] - one["calls"]) / extra,
        "redis_cpu_us_per_joining_reader": max(many["redis_s"] - one["redis_s"], 0) / extra * 1e6,
    }


def size_table(per_token: dict, per_reader: dict, memory: dict) -> list[dict]:
    """Gateways, worker processes, Redis shards and memory for 1k/10k/100k streams, and what runs out first."""
    rows = []
    for streams in (1_000, 10_000, 100_000):
        tokens_per_s = streams * STREAM_RATE
        gateway_cores = tokens_per_s * (per_token["gateway_cpu_us_per_token"]
                                        + (READERS - 1) * per_reader["gateway_cpu_us_per_token_per_extra_reader"]) / 1e6
        worker_cores = tokens_per_s * per_token["worker_cpu_us_per_token"] / 1e6
        redis_cores = tokens_per_s * per_token["redis_cpu_us_per_token"] / 1e6
        gateways = math.ceil(gateway_cores / CORE_BUDGET)
        workers = max(math.ceil(worker_cores / CORE_BUDGET), math.ceil(streams / JOBS_PER_WORKER_PROCESS))
        shards = math.ceil(redis_cores / CORE_BUDGET)
        live_mb = streams * (memory["redis_bytes_per_job"] + TOKENS_PER_JOB * memory["redis_bytes_per_token"]) / 2**20
        # Retention: every job of the last hour stays readable (finished jobs: one stream each).
        retained_mb_per_hour = live_mb * 3600 / (TOKENS_PER_JOB / STREAM_RATE)
        needs = {"gateway cores": gateway_cores, "worker cores": worker_cores, "Redis cores": redis_cores}
        rows.append({"streams": streams, "tokens_per_s": tokens_per_s, "gateway_processes": gateways,
                     "worker_processes": workers, "redis_shards": shards, "redis_live_mb": live_mb,
                     "redis_retained_mb_per_hour": retained_mb_per_hour,
                     "first_to_run_out": max(needs, key=needs.get)})
    return rows


async def sizing(impl: TokenRelay, sizes) -> dict:
    from .relay_cost import one_size

    started = time.monotonic()
    per_token = await one_size(impl, 100, sizes.relay_tokens_per_s, sizes.relay_window_s)
    per_reader = await reader_costs(impl, sizes.sizing_readers)
    memory = await memory_costs(impl, sizes.sizing_jobs)
    return {"per_token": per_token, "per_reader": per_reader, "memory": memory,
            "table": size_table(per_token, per_reader, memory), "seconds": time.monotonic() - started}
