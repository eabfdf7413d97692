"""The Redis ACL users the README documents for the gateway and the worker are enough to run the
product, and the gateway's user cannot touch anything else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from tokenrelay import Client
from tokenrelay.cli.embedded import EmbeddedServer

from ..support.processes import (
    Process,
    stack_env,
    start_gateway,
    start_worker,
    wait_for_workers,
)

PREFIX = "tokenrelay"  # the README's rules are written for the default prefix and queue name
README = Path(__file__).resolve().parents[2] / "README.md"


def _documented_rules(user: str) -> str:
    """The rules README.md gives for a user: what is tested is exactly what is documented."""
    prefix = f"ACL SETUSER {user} on >"
    line = next(line for line in README.read_text().splitlines() if line.startswith(prefix))
    return line.split(" resetkeys ", 1)[1]


GATEWAY_RULES = _documented_rules("tokenrelay-gateway")
WORKER_RULES = _documented_rules("tokenrelay-worker")


def _user(name: str, rules: str) -> list[str]:
    return ["--user", name, "on", f">{name}-pw", *rules.split(" ")]


@pytest.fixture
def acl_server():
    server = EmbeddedServer(extra_args=_user("gateway", GATEWAY_RULES) + _user("worker", WORKER_RULES))
    with server:
        yield server


def _url(server: EmbeddedServer, user: str) -> str:
    return f"redis://{user}:{user}-pw@127.0.0.1:{server.port}/0"


def test_gateway_and_worker_run_with_their_acl_users(acl_server, stack_settings):
    settings = {**stack_settings, "key_prefix": PREFIX, "queue_name": PREFIX}
    worker = start_worker(stack_env(_url(acl_server, "worker"), **settings), name="worker-acl")
    processes: list[Process] = [worker]
    try:
        gateway, url = start_gateway(stack_env(_url(acl_server, "gateway"), **settings))
        processes.append(gateway)
        wait_for_workers(url, 1)
        with Client(url) as client:
            job = client.submit("least privilege", params={"max_tokens": 10, "tokens_per_second": 0})
            events = list(client.stream(job["id"]))
            assert events[-1].data["status"] == "succeeded"
            slow = client.submit("cancel me", params={"max_tokens": 200, "tokens_per_second": 20})
            for event in client.stream(slow["id"]):
                if event.event == "token":
                    client.cancel(slow["id"])
                if event.event == "end":
                    assert event.data["status"] == "cancelled"
            assert httpx.post(f"{url}/v1/jobs/{job['id']}/stream-token").status_code == 200
        # The Responses API and the AI SDK routes need nothing more.
        created = httpx.post(f"{url}/v1/responses", timeout=30, json={
            "model": "demo", "input": "hi", "max_output_tokens": 3, "tokens_per_second": 0}).json()
        assert created["status"] == "incomplete" and created["usage"]["output_tokens"] == 3
        assert httpx.delete(f"{url}/v1/responses/{created['id']}").json()["deleted"] is True
        chat = {"id": "acl-chat", "model": "demo", "max_tokens": 3, "tokens_per_second": 0,
                "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
        assert httpx.post(f"{url}/ai-sdk/chat", json=chat, timeout=30).text.endswith("data: [DONE]\n\n")
        assert httpx.get(f"{url}/ai-sdk/chat/acl-chat/stream", timeout=30).text.endswith("data: [DONE]\n\n")
        admin = redis.Redis.from_url(acl_server.url)
        denied = [entry for entry in admin.acl_log() if entry.get("username") in ("gateway", "worker")]
        admin.close()
        assert denied == [], [(e.get("username"), e.get("reason"), e.get("object"), e.get("context")) for e in denied]
    finally:
        for process in processes:
            process.stop()


@pytest.mark.parametrize("command", [
    ("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"), ("GET", "other-app:secret"),
    ("HGETALL", "other-app:{x}:meta"), ("EVAL", "return 1", "0"), ("SUBSCRIBE", "other-channel"),
    ("CLIENT", "KILL", "ID", "1"), ("ACL", "LIST"), ("SHUTDOWN",),
])
def test_the_gateway_user_cannot_do_anything_else(acl_server, command):
    gateway = redis.Redis.from_url(_url(acl_server, "gateway"))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            gateway.execute_command(*command)
    finally:
        gateway.close()
