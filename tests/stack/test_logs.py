"""Structured logs: JSON lines that carry the job id and never the prompt or a key."""

from __future__ import annotations

import io
import json
import logging

from tokenrelay import Client
from tokenrelay.core.logs import configure_logging
from tokenrelay.core.settings import load_settings

from ..support.processes import Stack, wait_until

CANARY = "purple-elephant-canary-7731"
KEY = "sk-live-abcdefghijklmnop"


def json_lines(text: str) -> list[dict]:
    # Celery prints its start-up banner with print(), not through logging: only log lines are JSON.
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_carry_the_job_id_and_never_the_prompt(redis_server, isolated_settings):
    settings = {**isolated_settings, "log_format": "json"}
    with Stack(redis_server.url, settings) as stack:
        with Client(stack.url) as client:
            job = client.submit(f"tell me about {CANARY}", params={"max_tokens": 8, "tokens_per_second": 0})
            events = list(client.stream(job["id"]))
            assert CANARY in "".join(e.data["text"] for e in events if e.event == "token")  # the demo echoes it
        # The worker logs the job's end just after the stream's `end` went out.
        wait_until(lambda: f"job {job['id']} attempt 1 succeeded" in stack.workers[0].output(), message="end logged")
        worker_log, gateway_log = stack.workers[0].output(), stack.gateways[0].output()
        # The debug setting: a gateway started with it logs prompts.
        stack.env["TOKENRELAY_LOG_PROMPTS"] = "true"
        with Client(stack.add_gateway()) as client:
            client.submit(f"debug {CANARY}", params={"max_tokens": 1})
        assert CANARY in stack.gateways[1].output()
    assert CANARY not in worker_log and CANARY not in gateway_log
    worker_lines, gateway_lines = json_lines(worker_log), json_lines(gateway_log)
    assert worker_lines and gateway_lines
    for line in worker_lines + gateway_lines:
        assert {"ts", "level", "logger", "message"} <= set(line)
    about_job = [line for line in worker_lines + gateway_lines if job["id"] in line["message"]]
    assert {line["logger"] for line in about_job} >= {"tokenrelay.worker", "tokenrelay.gateway"}
    assert all(line["job_id"] == job["id"] for line in about_job)
    assert any("succeeded" in line["message"] for line in about_job if line["logger"] == "tokenrelay.worker")


def test_keys_are_masked_and_lines_carry_the_job_id():
    stream = io.StringIO()
    configure_logging(load_settings(log_format="json", log_level="DEBUG"), stream=stream)
    try:
        job_id = "0123456789abcdef0123456789abcdef"
        logging.getLogger("tokenrelay.test").warning("job %s: provider said bad key %s", job_id, KEY)
        logging.getLogger("tokenrelay.test").info("plain", extra={"job_id": job_id})
    finally:
        logging.getLogger().handlers = []
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert KEY not in stream.getvalue() and "sk-***" in lines[0]["message"]
    assert lines[0]["job_id"] == lines[1]["job_id"] == job_id and lines[0]["level"] == "warning"
