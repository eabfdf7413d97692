"""Each quota refuses with a clear JSON error naming its setting; 429s carry Retry-After."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from redis import Redis

from api.auth import hash_key
from tokenrelay import Client

from ..support.http import assert_error
from ..support.processes import ROOT, Stack, stack_env, wait_until

KEYS = {"alice": "tr_alice-quota-key", "bob": "tr_bob-quota-key", "carol": "tr_carol-quota-key"}
JOB = {"model": "demo", "prompt": "q", "params": {"max_tokens": 3, "tokens_per_second": 0}}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def settings_for(base: dict, name: str, **limits: object) -> dict:
    keys = ",".join(f"{who}:{hash_key(key)}" for who, key in KEYS.items())
    return {**base, "key_prefix": f"tokenrelay-{name}", "queue_name": f"tokenrelay-{name}", "api_keys": keys,
            **limits}


def assert_429(response: httpx.Response, limit: str) -> None:
    error = assert_error(response, 429, mentions=limit, param=limit)
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(response.headers["Retry-After"]) <= 61


def test_active_jobs_per_key_queue_depth_and_readers_per_job(redis_server, stack_settings):
    settings = settings_for(stack_settings, "quota-jobs", max_active_jobs_per_key=2, max_queued_jobs=3,
                            max_readers_per_job=2, job_timeout_s=1)
    # No worker at first: jobs stay queued.
    with Stack(redis_server.url, settings, workers=0) as stack:
        url = stack.url
        post = lambda who: httpx.post(f"{url}/v1/jobs", json=JOB, headers=bearer(who))  # noqa: E731
        first, second = post("alice"), post("alice")
        assert first.status_code == second.status_code == 202
        assert_429(post("alice"), "max_active_jobs_per_key")
        assert post("bob").status_code == 202  # another key has its own budget; the queue now holds 3
        assert_429(post("bob"), "max_queued_jobs")

        # Readers per job, on this gateway: the third open stream of one job is refused...
        job_id = first.json()["id"]
        with httpx.Client(base_url=url, headers=bearer("alice"), timeout=10) as http:
            with http.stream("GET", f"/v1/jobs/{job_id}/stream") as one, \
                    http.stream("GET", f"/v1/jobs/{job_id}/stream") as two:
                assert one.status_code == two.status_code == 200
                assert_429(http.get(f"/v1/jobs/{job_id}/stream"), "max_readers_per_job")
            # ...and a slot comes back as soon as a reader leaves.
            wait_until(lambda: http.post(f"/v1/jobs/{job_id}/stream-token").status_code == 200)

            def third_reader_admitted() -> bool:
                with http.stream("GET", f"/v1/jobs/{job_id}/stream") as three:
                    return three.status_code == 200
            wait_until(third_reader_admitted, timeout_s=5, message="reader slots released on disconnect")

        # A cancelled job stops counting against its key.
        assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=bearer("alice")).status_code == 202
        stack.add_worker()  # drains the queue, so max_queued_jobs admits again
        wait_until(lambda: post("alice").status_code == 202, timeout_s=30, interval_s=0.2,
                   message="a slot freed by the cancel and the drained queue")

        # Per-job time limit: an attempt past job_timeout_s fails with a clear error.
        with Client(url, api_key=KEYS["carol"]) as carol:
            job = carol.submit("slow", params={"max_tokens": 100, "tokens_per_second": 10})
            events = list(carol.stream(job["id"]))
            errors = [e.data for e in events if e.event == "error"]
            assert errors == [{"type": "timeout", "message": "the job ran longer than its time limit"}]
            assert events[-1].event == "end" and events[-1].data["status"] == "failed"


def test_queue_depth_on_a_redis_broker_of_its_own(redis_server, stack_settings):
    # A broker URL of its own (another database of the same server): the step-by-step submit (quotas,
    # record, outbox, LPUSH on the broker), with max_queued_jobs read from the broker's queue.
    settings = settings_for(stack_settings, "quota-broker", max_queued_jobs=3,
                            broker_url=redis_server.url.rsplit("/", 1)[0] + "/3")
    with Stack(redis_server.url, settings, workers=0) as stack:
        post = lambda who, **headers: httpx.post(f"{stack.url}/v1/jobs", json=JOB,  # noqa: E731
                                                 headers={**bearer(who), **headers})
        queued = [post("alice"), post("alice")]
        assert [answer.status_code for answer in queued] == [202, 202]
        queued.append(post("bob", **{"Idempotency-Key": "bob-1"}))
        assert queued[-1].status_code == 202
        assert_429(post("carol"), "max_queued_jobs")
        again = post("bob", **{"Idempotency-Key": "bob-1"})  # a repeat is no new job: answered while full
        assert (again.status_code, again.json()["id"]) == (202, queued[-1].json()["id"])

        stack.add_worker()  # drains the broker's queue: every job runs, and submits are admitted again
        with Client(stack.url, api_key=KEYS["alice"]) as alice:
            for answer in queued[:2]:
                assert list(alice.stream(answer.json()["id"]))[-1].data["status"] == "succeeded"
        wait_until(lambda: post("carol").status_code == 202, timeout_s=10, interval_s=0.2,
                   message="the drained queue admits again")


def test_requests_per_minute_per_key_and_stream_duration(redis_server, stack_settings):
    settings = settings_for(stack_settings, "quota-rate", rate_limit_per_minute=5, max_stream_s=1,
                            keepalive_s=0.2)
    with Stack(redis_server.url, settings, workers=0) as stack:
        url = stack.url
        statuses = []
        for _ in range(11):  # at most 5 + 5 fit, even across a minute boundary
            response = httpx.get(f"{url}/v1/jobs/{'0' * 32}", headers=bearer("alice"))
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert_429(response, "rate_limit_per_minute")
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {404}
        assert httpx.get(f"{url}/health").status_code == 200  # public routes are not counted
        # Another key is not affected. A queued job's stream (no worker) is cut after max_stream_s.
        job = httpx.post(f"{url}/v1/jobs", json=JOB, headers=bearer("bob")).json()
        started = time.monotonic()
        response = httpx.get(f"{url}/v1/jobs/{job['id']}/stream", headers=bearer("bob"), timeout=10)
        elapsed = time.monotonic() - started
        assert response.status_code == 200 and "max_stream_s" in response.text and "event: end" not in response.text
        assert 1 <= elapsed < 5


def test_submits_count_against_requests_per_minute_in_their_own_round_trip(redis_server, stack_settings):
    # A submit is counted inside its one-step script; a submit refused before it (400) is counted after
    # its answer. Both share the key's budget with every other request.
    settings = settings_for(stack_settings, "quota-rate-submit", rate_limit_per_minute=4)
    if time.time() % 60 > 50:  # the whole test within one window
        time.sleep(61 - time.time() % 60)
    redis = Redis.from_url(redis_server.url)
    with Stack(redis_server.url, settings, workers=0) as stack:
        post = lambda body: httpx.post(f"{stack.url}/v1/jobs", json=body, headers=bearer("alice"))  # noqa: E731
        assert httpx.get(f"{stack.url}/v1/jobs/{'0' * 32}", headers=bearer("alice")).status_code == 404
        assert_error(post({**JOB, "params": {"max_tokens": 10 ** 9}}), 400, param="params.max_tokens")
        assert post(JOB).status_code == 202
        assert post(JOB).status_code == 202
        queued = redis.llen(settings["queue_name"])
        assert_429(post(JOB), "rate_limit_per_minute")  # the 5th request: refused by the script
        assert redis.llen(settings["queue_name"]) == queued == 2  # and nothing was queued
        assert_429(httpx.get(f"{stack.url}/v1/jobs/{'0' * 32}", headers=bearer("alice")), "rate_limit_per_minute")
        assert post(JOB).status_code == 429
        assert httpx.post(f"{stack.url}/v1/jobs", json=JOB, headers=bearer("bob")).status_code == 202
    redis.close()


@pytest.mark.parametrize("command", ["api", "dev"])
def test_the_cli_refuses_a_public_host_without_keys(command):
    env = stack_env("redis://127.0.0.1:1/0")
    env.pop("TOKENRELAY_API_KEYS", None)
    result = subprocess.run([sys.executable, "-m", "tokenrelay", command, "--host", "0.0.0.0", "--port", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr


def test_the_key_command_prints_a_key_and_its_entry():
    result = subprocess.run([sys.executable, "-m", "tokenrelay", "key", "ci", "--admin"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    key = next(v for k, v in lines.items() if k.startswith("key"))
    entry = next(v for k, v in lines.items() if k.startswith("TOKENRELAY_API_KEYS"))
    assert entry == f"ci:{hash_key(key)}:admin"
