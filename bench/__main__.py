"""`python -m bench [--quick] [--chart FILE]`: tokenrelay against `direct` and `naive relay`, side by side.

Prints a table per scenario and, as its last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone

from . import interfaces, overload, relay_cost, scenarios, sizing
from .procs import Direct, LangGraphDev, Naive, TokenRelay

WORKERS = 2  # worker processes on each side that has workers (a 2-core machine)
GATEWAY_PROCESSES = len(os.sched_getaffinity(0))  # tokenrelay's default: one gateway process per core


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run(make, plan: list[tuple[str, object]], sizes: scenarios.Sizes, results: dict,
               only: set[str] | None = None) -> None:
    plan = [(name, scenario) for name, scenario in plan if only is None or name.split("_")[0] in only]
    if not plan:
        return
    try:
        impl = make()
    except Exception as exc:  # noqa: BLE001 - e.g. LangGraph's virtualenv is missing: say so in the results
        for name, _ in plan:
            results.setdefault(name, {})[getattr(make, "name", "?")] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        return
    try:
        for name, scenario in plan:
            _log(f"  {impl.name}: {name}")
            await asyncio.sleep(0.5)
            try:
                results.setdefault(name, {})[impl.name] = await scenario(impl, sizes)
            except Exception as exc:  # noqa: BLE001 - a baseline that breaks is a result too
                results.setdefault(name, {})[impl.name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        impl.stop()


async def _alternating_first_token(make_tokenrelay, sizes: scenarios.Sizes, results: dict) -> None:
    """Scenario 4 again, both stacks up and requests alternating; its figures join scenario 4's."""
    impls = []
    try:
        impls.append(make_tokenrelay())
        impls.append(Direct())
        figures = await scenarios.first_token_alternating(impls, sizes)
    except Exception as exc:  # noqa: BLE001 - a failed side measurement is a result too
        figures = {impl.name: {"alternating_error": f"{type(exc).__name__}: {exc}"[:200]} for impl in impls}
    finally:
        for impl in impls:
            impl.stop()
    for name, values in figures.items():
        results.setdefault("4_first_token", {}).setdefault(name, {}).update(values)


async def _sweep(make, scenario, field: str, values: list[int], sizes: scenarios.Sizes) -> list[dict]:
    impl = make()
    points = []
    try:
        for value in values:
            setattr(sizes, field, value)
            _log(f"  {impl.name}: {scenario.__name__} at {value}")
            points.append({"concurrency": value, **await scenario(impl, sizes)})
    finally:
        impl.stop()
    return points


def _table(results: dict) -> str:
    lines = []
    for scenario, by_impl in results.items():
        if scenario == "sweeps":
            continue
        lines.append(f"\n{scenario}")
        for impl, figures in by_impl.items():
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
            lines.append(f"  {impl:<11} {shown}")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    parser.add_argument("--no-langgraph", action="store_true", help="skip LangGraph's dev server (scenario 6)")
    parser.add_argument("--chart", help="also sweep concurrency and draw tokens/s and lag to this PNG")
    parser.add_argument("--only", help="run only these scenarios, by number (e.g. 6,7)")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    _raise_fd_limit()
    sizes = scenarios.Sizes.quick() if args.quick else scenarios.Sizes()
    concurrency = max(sizes.latency_jobs, sizes.throughput_jobs) // WORKERS + 50
    tokenrelay = lambda: TokenRelay(WORKERS, concurrency, GATEWAY_PROCESSES)  # noqa: E731
    naive = lambda: Naive(WORKERS, concurrency)  # noqa: E731
    started = time.monotonic()
    results: dict = {}
    _log("tokenrelay")
    await _run(tokenrelay, [("1_throughput", scenarios.throughput), ("2_latency", scenarios.latency),
                            ("3_fanout", scenarios.fanout), ("4_first_token", scenarios.first_token),
                            ("8_side_by_side", scenarios.side_by_side),
                            ("11_interfaces", interfaces.first_token_by_interface),
                            ("5_idle_readers", scenarios.idle_readers)], sizes, results, only)  # stops the workers
    # Per-token and per-unit costs (README "Scaling"): one gateway process, workers for 1,000 live jobs.
    await _run(lambda: TokenRelay(WORKERS, max(sizes.relay_live_jobs) // WORKERS + 50, 1),
               [("9_relay_cost", relay_cost.relay_cost), ("10_sizing", sizing.sizing)], sizes, results, only)
    # Overload (issue #11), each on a stack of its own: workers sized to run every job at once.
    await _run(tokenrelay, [("6_burst", overload.burst)], sizes, results, only)
    await _run(lambda: TokenRelay(WORKERS, sizes.starvation_jobs // WORKERS + 50, GATEWAY_PROCESSES),
               [("7_lease_starvation", overload.lease_starvation)], sizes, results, only)
    _log("direct")
    await _run(Direct, [("1_throughput", scenarios.throughput), ("2_latency", scenarios.latency),
                        ("3_fanout", scenarios.fanout), ("4_first_token", scenarios.first_token)], sizes, results, only)
    _log("naive relay")
    await _run(naive, [("1_throughput", scenarios.throughput), ("2_latency", scenarios.latency),
                       ("3_fanout", scenarios.fanout), ("4_first_token", scenarios.first_token)], sizes, results, only)
    if only is None or "4" in only:
        _log("first token, tokenrelay and direct up at once, alternating")
        await _alternating_first_token(tokenrelay, sizes, results)
    if not args.no_langgraph:
        _log("langgraph dev")
        await _run(LangGraphDev, [("8_side_by_side", scenarios.side_by_side)], sizes, results, only)
    if "direct" in results.get("1_throughput", {}) and "tokenrelay" in results.get("1_throughput", {}):
        direct = results["1_throughput"]["direct"].get("tokens_per_s")
        ours = results["1_throughput"]["tokenrelay"].get("tokens_per_s")
        results["1_throughput"]["tokenrelay"]["ratio_to_direct"] = ours / direct if ours and direct else float("nan")
    if args.chart:
        sweeps = {}
        for name, make in (("tokenrelay", tokenrelay), ("direct", Direct), ("naive", naive)):
            _log(f"sweep {name}")
            sweeps[name] = {
                "throughput": await _sweep(make, scenarios.throughput, "throughput_jobs", [1, 8, 32, 64],
                                           scenarios.Sizes.quick() if args.quick else scenarios.Sizes()),
                "latency": await _sweep(make, scenarios.latency, "latency_jobs", [100, 300, 1000],
                                        scenarios.Sizes.quick() if args.quick else scenarios.Sizes()),
            }
        results["sweeps"] = sweeps
    results["meta"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(_table({k: v for k, v in results.items() if k != "meta"}))
    print(json.dumps(results, default=lambda o: None), flush=True)
    if args.chart:  # after the figures are out: a chart that fails loses nothing
        from .chart import draw

        draw(results["sweeps"], args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
