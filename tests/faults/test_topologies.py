"""The product on a Sentinel set-up and on a Valkey Cluster: streams end to end with two gateways and two
workers, a worker SIGKILL, and the primary (Sentinel) or a master (Cluster) SIGKILLed mid-stream."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
import redis

from tokenrelay import Client

from ..support.processes import Stack, wait_until
from ..support.topologies import SentinelSet, ValkeyCluster
from .helpers import SLOW_JOB, readers_mid_stream, record, submit, wait_ready
from .invariants import check_reader

FAILOVER_JOB = {**SLOW_JOB, "params": {"max_tokens": 100, "tokens_per_second": 20}}


@pytest.fixture
def sentinel_set():
    with SentinelSet() as servers:
        yield servers


@pytest.fixture
def cluster(redis_server):
    with ValkeyCluster() as servers:
        yield servers


def _settings(fault_settings: dict, broker_url: str | None = None) -> dict:
    return {**fault_settings, "broker_url": broker_url} if broker_url else fault_settings


def _readers_end_well(stack: Stack, job_ids: list[str], readers_by_job: dict) -> list[dict]:
    summaries = []
    for job_id in job_ids:
        try:
            events = [reader.join() for reader in readers_by_job[job_id]]
        except AssertionError as exc:  # say where the job stands, for a failure seen only in CI
            raise AssertionError(f"{exc}; job {job_id}: {record(stack.url, job_id)}") from None
        final = record(stack.url, job_id)
        assert final["status"] in ("succeeded", "failed"), final
        summaries += [check_reader(reader_events, final) for reader_events in events]
    return summaries


def _no_job_stuck(stack: Stack, job_ids: list[str]) -> None:
    for job_id in job_ids:
        wait_until(lambda: record(stack.url, job_id)["status"] not in ("queued", "running"), timeout_s=60,
                   message=f"job {job_id} to finish")


def _fresh_job_runs(stack: Stack) -> None:
    job_id = submit(stack.url, {**SLOW_JOB, "params": {"max_tokens": 5, "tokens_per_second": 0}})
    reader = readers_mid_stream(stack.urls, job_id, count=1, tokens=0)[0]
    summary = check_reader(reader.join(), record(stack.url, job_id))
    assert (summary["status"], summary["tokens"]) == ("succeeded", 5)


def _tour(stack: Stack) -> None:
    """The code paths that touch Redis differently per topology, once each: resume, late join, cancel
    (script + pub/sub to the workers), the job list (walks every bucket), metrics (counts every bucket)."""
    with Client(stack.urls[0]) as first, Client(stack.urls[1]) as second:
        job = first.submit("tour", params={"max_tokens": 40, "tokens_per_second": 40})
        head = []
        for event in first.stream(job["id"]):
            head.append(event)
            if event.event == "token" and event.data["index"] >= 5:
                break
        rest = list(second.stream(job["id"], last_event_id=head[-1].id))  # resumed on the other gateway
        whole = list(first.stream(job["id"]))  # a late joiner, after the end
        assert [e.id for e in head + rest] == [e.id for e in whole] and whole[-1].data["status"] == "succeeded"
        slow = second.submit("cancel me", params={"max_tokens": 500, "tokens_per_second": 20})
        for event in first.stream(slow["id"]):
            if event.event == "token":
                second.cancel(slow["id"])
        assert event.event == "end" and event.data["status"] == "cancelled"
        listed = {j["id"] for j in httpx.get(f"{stack.url}/v1/jobs", params={"limit": 200}, timeout=10).json()["data"]}
        assert {job["id"], slow["id"]} <= listed
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10).text
    assert "tokenrelay_workers_alive" in metrics and 'tokenrelay_jobs{status="running"}' in metrics


def _worker_sigkill(stack: Stack) -> dict:
    job_id = submit(stack.url, FAILOVER_JOB)
    readers = readers_mid_stream(stack.urls, job_id, count=2)
    victim = next(w for w in stack.workers if f"job {job_id} attempt 1 started" in w.output())
    victim.signal(signal.SIGKILL)
    summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
    assert {(s["status"], s["tokens"], s["attempt"], s["resets"]) for s in summaries} == {("succeeded", 100, 2, 1)}
    return summaries[0]


def _ready_for_failover(stack: Stack) -> list:
    """Two gateways and two workers, after the tour and a worker SIGKILL: the processes that must outlive the
    failover."""
    stack.add_gateway()
    _fresh_job_runs(stack)
    _tour(stack)
    _worker_sigkill(stack)
    stack.add_worker()
    return [p for p in stack.workers + stack.gateways if p.alive()]


def _survive_failover(stack: Stack, processes: list, job_ids: list[str], fail_over) -> tuple[list[dict], float, float]:
    """Readers mid-stream on each job, then `fail_over()` (kills the primary, returns seconds until a new one
    serves). Every reader ends well, no job is stuck, no process exits, a new job runs. Returns the readers'
    summaries, seconds until /ready is 200 and until all that was done, both from the kill."""
    readers = {job_id: readers_mid_stream(stack.urls, job_id, count=2) for job_id in job_ids}
    killed_at = time.monotonic()
    failover_s = fail_over()
    ready_s = failover_s + wait_ready(stack.url, timeout_s=60)
    summaries = _readers_end_well(stack, job_ids, readers)
    # At most one more attempt (a lease that lived on the lost primary): live workers keep their leases.
    assert all(summary["attempt"] <= 2 for summary in summaries), summaries
    _no_job_stuck(stack, job_ids)
    assert all(p.alive() for p in processes), "no worker or gateway may exit on a failover"
    _fresh_job_runs(stack)
    return summaries, ready_s, time.monotonic() - killed_at


def _outcomes(summaries: list[dict]) -> list:
    return sorted({(s["status"], s["attempt"], s["tokens"]) for s in summaries})


@pytest.mark.timeout(300)  # a failover, two workers and two gateways, on a loaded machine
def test_sentinel_two_gateways_worker_sigkill_and_primary_failover(sentinel_set, fault_settings, capsys):
    with Stack(sentinel_set.url, _settings(fault_settings), workers=2) as stack:
        processes = _ready_for_failover(stack)
        job_ids = [submit(url, FAILOVER_JOB) for url in stack.urls]
        old_port = sentinel_set.current_primary_port()
        promoted: list[float] = []

        def fail_over() -> float:
            sentinel_set.kill_primary()
            promoted.append(sentinel_set.wait_promoted(old_port))
            return promoted[0]

        summaries, ready_s, total_s = _survive_failover(stack, processes, job_ids, fail_over)
    with capsys.disabled():
        print(f"\n[sentinel primary SIGKILL] promoted after {promoted[0]:.1f} s; /ready 200 {ready_s:.1f} s after "
              f"the kill; every reader ended within {total_s:.1f} s; outcomes {_outcomes(summaries)}")


@pytest.mark.timeout(300)  # a failover, two workers and two gateways, on a loaded machine
def test_cluster_two_gateways_worker_sigkill_and_master_failover(cluster, redis_server, fault_settings, capsys):
    # Celery cannot use a cluster: the broker is a standalone server.
    settings = _settings(fault_settings, broker_url=redis_server.url)
    with Stack(cluster.url, settings, workers=2) as stack:
        processes = _ready_for_failover(stack)
        # Jobs on every master, so whichever dies holds some of them.
        job_ids = [submit(stack.urls[i % 2], FAILOVER_JOB) for i in range(4)]
        healthy: list[float] = []

        def fail_over() -> float:
            cluster.kill(cluster.master_of(stack_key(settings, job_ids[0])))
            healthy.append(cluster.wait_healthy(timeout_s=60))
            return healthy[0]

        summaries, ready_s, total_s = _survive_failover(stack, processes, job_ids, fail_over)
    with capsys.disabled():
        print(f"\n[cluster master SIGKILL] replica took over after {healthy[0]:.1f} s; /ready 200 {ready_s:.1f} s "
              f"after the kill; every reader ended within {total_s:.1f} s; outcomes {_outcomes(summaries)}")


def stack_key(settings: dict, job_id: str) -> str:
    return f"{settings['key_prefix']}:{{{job_id}}}:events"


def test_writes_a_failover_lost_end_the_job_with_an_error_never_a_silent_gap(redis_server, fault_settings):
    """What readers see when the new primary lacks entries the old one had acknowledged (asynchronous
    replication). Simulated on one server by deleting the stream's newest entries, as such a failover does."""
    with Stack(redis_server.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url, FAILOVER_JOB)
        readers = readers_mid_stream(stack.urls, job_id, count=2)
        client = redis.Redis.from_url(redis_server.url)
        key = stack_key(fault_settings, job_id)
        # The newest three, read and deleted in one step: a write landing in between would be newer.
        lost = [entry_id.decode() for entry_id in client.eval(
            "local ids = {} for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 3)) do "
            "ids[#ids + 1] = e[1] end redis.call('XDEL', KEYS[1], unpack(ids)) return ids", 1, key)]
        for reader in readers:  # they had the lost entries: no gap for them, and an explicit end
            summary = check_reader(reader.join(), record(stack.url, job_id))
            assert summary["status"] == "failed" and summary["errors"][-1]["type"] == "store_lost"
        # A reader that comes back with a lost id gets what followed it, not a 400.
        with Client(stack.url) as late:
            events = list(late.stream(job_id, last_event_id=lost[0]))
        assert [e.event for e in events[-2:]] == ["error", "end"] and events[-1].data["status"] == "failed"
        # One that reads from the start sees the hole, then the error and the end: never a silent gap.
        with Client(stack.url) as fresh:
            whole = list(fresh.stream(job_id))
        assert not {e.id for e in whole} & set(lost)
        assert whole[-2].data["type"] == "store_lost" and whole[-1].event == "end"
        client.close()


def test_an_end_a_failover_lost_runs_the_job_again(redis_server, fault_settings):
    """A primary that acknowledged a job's end and died before sending it on leaves the new primary with the
    job `running`, its last lease and no `end`, while the running index (another slot, another primary) no
    longer lists it. Simulated on one server by putting those keys back as the replica had them."""
    with Stack(redis_server.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url, {**SLOW_JOB, "params": {"max_tokens": 20, "tokens_per_second": 0}})
        client = redis.Redis.from_url(redis_server.url)
        prefix = f"{fault_settings['key_prefix']}:{{{job_id}}}"
        wait_until(lambda: client.hget(f"{prefix}:meta", "status") == b"succeeded", timeout_s=20, interval_s=0.01,
                   message="the job to end")
        (end_id, _), = client.xrevrange(f"{prefix}:events", count=1)
        with client.pipeline(transaction=True) as pipe:  # within the lease after the end, as a failover would
            pipe.xdel(f"{prefix}:events", end_id)
            pipe.hset(f"{prefix}:meta", "status", "running")
            pipe.hdel(f"{prefix}:meta", "finished_at", "output_text", "usage", "finish_reason")
            pipe.set(f"{prefix}:lease", 1, px=int(fault_settings["lease_ttl_s"] * 1000))
            pipe.execute()
        final = wait_until(lambda: (r := record(stack.url, job_id))["status"] == "succeeded" and r, timeout_s=30,
                           message="the job to run again and end")
        assert final["attempt"] == 2
        with Client(stack.url) as reader:
            summary = check_reader(list(reader.stream(job_id)), final)
        assert (summary["attempt"], summary["tokens"], summary["resets"]) == (2, 20, 1)
        # Once its second end has settled, the job leaves every index the reapers walk.
        key_prefix = fault_settings["key_prefix"]
        indexes = [f"{key_prefix}:{index}:{n:02d}" for index in ("running", "settling") for n in range(16)]
        wait_until(lambda: not any(client.zscore(key, job_id) for key in indexes), timeout_s=20,
                   message="the job to leave the running and settling indexes")
        client.close()
