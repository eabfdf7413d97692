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
    side_ttft_runs: int = 20
    interface_runs: int = 15
    burst_submits: int = 2000
    starvation_jobs: int = 1600

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(throughput_jobs=32, throughput_tokens=1000, latency_jobs=200, latency_tokens=30,
                   fanout_readers=200, fanout_tokens=50, ttft_jobs=50, idle_streams=1000, idle_jobs=20,
                   relay_window_s=5.0,
                   burst_submits=500, starvation_jobs=300, side_ttft_runs=5,
                   interface_runs=5)


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

def _commands(impl: Implementation) -> int:
    if impl.redis is None:
        return 0
    client = redis.Redis.from_url(impl.redis.url)
    try:
        return sum(stats["calls"] for stats in client.info("commandstats").values())
    finally:
        client.close()


# Readers of the live measurement join before the job's first token: tokenrelay's job waits this long per
# reader (the demo model's `start_delay_s`, at least JOIN_ALLOWANCE_MIN_S): enough for 1,000 joins on a
# loaded 2-core machine (`joined_before_first_token_s` says whether it was).
JOIN_ALLOWANCE_S_PER_READER = 0.008
JOIN_ALLOWANCE_MIN_S = 3.0


def _join_allowance_s(readers: int) -> float:
    return max(JOIN_ALLOWANCE_MIN_S, readers * JOIN_ALLOWANCE_S_PER_READER)


async def _fanout_once(impl: Implementation, readers: int, tokens: int, tps: float,
                       late: bool = False, delay_s: float | None = None) -> tuple[list, int, float, float]:
    """Readings, Redis commands, gateway CPU seconds of one job read by `readers` clients, and how long
    before its first token they had all joined (negative: after it). Readers join before the job's first
    token, as a broadcast's subscribers do; `late` (tokenrelay only): they join as the job starts, so
    their first tokens come from history."""
    started = time.monotonic()
    if isinstance(impl, TokenRelay):
        delay_s = 0.0 if late else _join_allowance_s(readers) if delay_s is None else delay_s
        status, job = await load.post_json(HOST, impl.port, "/v1/jobs", {
            "model": "demo", "prompt": "bench", "params": {"max_tokens": tokens, "tokens_per_second": tps,
                                                           "start_delay_s": delay_s}})
        path = f"/v1/jobs/{job['id']}/stream"
    else:  # naive relay and direct's in-process broadcast: readers subscribe, then the job starts
        job_id = f"fanout{time.monotonic_ns()}"
        path = f"/stream/{job_id}"
    commands_before, cpu_before = _commands(impl), impl.gateway_cpu()
    connected = [asyncio.Event() for _ in range(readers)]
    tasks = [asyncio.create_task(load.read_sse(HOST, impl.port, path, connected=c)) for c in connected]
    await asyncio.gather(*(c.wait() for c in connected))
    if isinstance(impl, TokenRelay):
        margin_s = delay_s - (time.monotonic() - started)
    else:
        await asyncio.sleep(0.5)  # let every subscription land before the job starts
        margin_s = 0.5
        await load.request(HOST, impl.port, "POST", f"/jobs/{job_id}?max_tokens={tokens}&tps={tps}", b"")
    readings = await asyncio.gather(*tasks)
    return readings, _commands(impl) - commands_before, impl.gateway_cpu() - cpu_before, margin_s


async def _fanout_figures(impl: Implementation, sizes: Sizes, late: bool) -> dict:
    tps, tokens = 50, sizes.fanout_tokens
    # The one-reader run waits as long as the many-reader one: background commands (heartbeats, reapers)
    # during the wait cancel out of the per-reader figures.
    _, commands_alone, cpu_alone, _ = await _fanout_once(impl, 1, tokens, tps, late,
                                                         delay_s=_join_allowance_s(sizes.fanout_readers))
    readings, commands, cpu, margin_s = await _fanout_once(impl, sizes.fanout_readers, tokens, tps, late)
    lags = [lag for r in readings for lag in r.lags_s]
    added = max(sizes.fanout_readers - 1, 1)
    figures = {
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
    }
    if impl.redis is not None:
        figures.update({
            "redis_commands_per_token_1_reader": commands_alone / tokens,
            "redis_commands_per_token": commands / tokens,
            "redis_commands_per_added_reader": (commands - commands_alone) / added,
        })
    figures.update({
        # Joining and reading the whole job (its tokens, once each) costs the gateway this much per reader.
        "gateway_cpu_us_per_added_reader": (cpu - cpu_alone) / added * 1e6,
        "readers_complete": sum(r.tokens == tokens for r in readings),
        "readers": sizes.fanout_readers,
    })
    if not late:  # > 0: every reader had joined before the first token, as the comparison needs
        figures["joined_before_first_token_s"] = margin_s
    return figures


async def fanout(impl: Implementation, sizes: Sizes) -> dict:
    """One job, many readers. Redis commands = a * tokens + b * readers: a run with one reader gives a.

    The unprefixed figures compare like for like, a live broadcast: every side's readers join before the
    job's first token. `late_join_*` (tokenrelay only: direct and naive cannot serve a reader that joins
    after the start) are the same figures for readers that join as the job starts, whose first tokens
    come from the stream's history."""
    figures = await _fanout_figures(impl, sizes, late=False)
    if isinstance(impl, TokenRelay):
        late = await _fanout_figures(impl, sizes, late=True)
        figures.update({f"late_join_{name}": value for name, value in late.items()})
        # Per token, the run without a wait: a wait's idle seconds would add their background commands.
        for name in ("redis_commands_per_token_1_reader", "redis_commands_per_token"):
            figures[name] = late[name]
    return figures


# -- 4. time to first token ---------------------------------------------------------------------------

ALTERNATING_WARMUP_ROUNDS = 20

async def first_token(impl: Implementation, sizes: Sizes) -> dict:
    overheads = []
    for _ in range(sizes.ttft_jobs):
        started = time.time()
        reading = await submit_and_read(impl, 1, 0)  # tps 0: the model's own first-token delay is 0
        overheads.append(reading.first_token_at - started)
    return {"ttft_p50_ms": percentile(overheads, 0.5) * 1000, "ttft_p99_ms": percentile(overheads, 0.99) * 1000}


async def first_token_alternating(impls: list[Implementation], sizes: Sizes) -> dict:
    """Time to first token with every implementation up at once, one request to each in turn (the order
    flipped each round): a machine whose speed drifts over minutes (a shared VM's does, by 2 × within an
    hour) then weighs on all of them alike, and none is measured while the others' processes are down."""
    overheads: dict[str, list[float]] = {impl.name: [] for impl in impls}
    for round_number in range(ALTERNATING_WARMUP_ROUNDS + sizes.ttft_jobs):
        for impl in (impls if round_number % 2 else impls[::-1]):
            started = time.time()
            reading = await submit_and_read(impl, 1, 0)
            if round_number >= ALTERNATING_WARMUP_ROUNDS:
                overheads[impl.name].append(reading.first_token_at - started)
    return {name: {"alternating_ttft_p50_ms": percentile(values, 0.5) * 1000,
                   "alternating_ttft_p99_ms": percentile(values, 0.99) * 1000}
            for name, values in overheads.items()}


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
    rss_before = sum(rss_bytes(pid) for pid in impl.gateway_pids())
    connected = [asyncio.Event() for _ in range(sizes.idle_streams)]
    tasks = []
    for index, event in enumerate(connected):
        path = f"/v1/jobs/{jobs[index % len(jobs)]}/stream"
        tasks.append(asyncio.create_task(load.read_sse(HOST, impl.port, path, connected=event)))
        if index % 500 == 499:
            await asyncio.gather(*(c.wait() for c in connected[: index + 1]))
    await asyncio.gather(*(c.wait() for c in connected))
    await asyncio.sleep(1.0)
    rss_after = sum(rss_bytes(pid) for pid in impl.gateway_pids())
    connections = sum(tcp_connections_to(pid, impl.redis.port) for pid in impl.gateway_pids())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": sizes.idle_streams,
        "gateway_kb_per_stream": (rss_after - rss_before) / sizes.idle_streams / 1024,
        "gateway_redis_connections": connections,
        "gateway_processes": impl.gateway_processes,
        "gateway_redis_connections_per_process": connections / impl.gateway_processes,
    }


def median_of(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {key: statistics.median(run[key] for run in runs) for key in keys}


# -- 8. side by side with LangGraph's dev server ------------------------------------------------------

SIDE_TOKENS = 2000


async def _langgraph_run(port: int, tokens: int) -> tuple[int, float, float]:
    """One threadless run read with LangGraph's SDK: (tokens, first token at, end at)."""
    from langgraph_sdk import get_client

    client = get_client(url=f"http://{HOST}:{port}")
    count, first = 0, None
    async for part in client.runs.stream(None, "bench", input={"messages": [{"role": "user", "content": "bench"}],
                                                                "max_tokens": tokens},
                                         stream_mode="messages-tuple"):
        if part.event == "messages" and part.data and part.data[0].get("content"):
            count += 1
            first = first or time.time()
    return count, first or float("nan"), time.time()


async def _side_run(impl: Implementation, tokens: int) -> tuple[int, float, float]:
    if impl.name == "langgraph":
        return await _langgraph_run(impl.port, tokens)
    reading = await submit_and_read(impl, tokens, 0)
    return reading.tokens, reading.first_token_at, time.time()


async def side_by_side(impl: Implementation, sizes: Sizes) -> dict:
    """tokens/s of 1 and 8 concurrent runs of 2,000 tokens, and time to first token, each read by its
    own client (LangGraph's SDK with stream_mode="messages-tuple"; raw SSE for tokenrelay)."""
    figures: dict = {}
    for runs in (1, 8):
        started = time.time()
        results = await asyncio.gather(*(_side_run(impl, SIDE_TOKENS) for _ in range(runs)))
        figures[f"tokens_per_s_{runs}_runs"] = sum(r[0] for r in results) / (max(r[2] for r in results) - started)
        figures[f"complete_{runs}_runs"] = sum(r[0] == SIDE_TOKENS for r in results)
    firsts = []
    for _ in range(sizes.side_ttft_runs):
        started = time.time()
        _, first, _ = await _side_run(impl, 1)
        firsts.append(first - started)
    figures["ttft_p50_ms"] = percentile(firsts, 0.5) * 1000
    figures["ttft_p99_ms"] = percentile(firsts, 0.99) * 1000
    return figures
