"""Fixtures: one real Valkey/Redis server, one OpenAI-wire test server, one worker and one gateway for
the whole run; Redis keys of the product are deleted between tests."""

from __future__ import annotations

import uuid

import pytest
import redis

from tokenrelay import Client
from tokenrelay.cli.embedded import EmbeddedServer

from .support.fake_openai import FakeOpenAIServer
from .support.processes import stack_env, start_gateway, start_worker, wait_for_workers
from .support.settings import TEST_SETTINGS


@pytest.fixture(scope="session")
def redis_server():
    with EmbeddedServer() as server:
        yield server


@pytest.fixture(scope="session")
def openai_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def stack_settings(redis_server, openai_server) -> dict[str, object]:
    return {**TEST_SETTINGS, "openai_base_url": openai_server.base_url, "openai_api_key": "sk-test"}


@pytest.fixture(scope="session")
def shared_stack(redis_server, stack_settings):
    env = stack_env(redis_server.url, **stack_settings)
    worker = start_worker(env, name="shared-worker")
    gateway, url = start_gateway(env)
    try:
        wait_for_workers(url, 1)
        yield {"url": url, "worker": worker, "gateway": gateway, "env": env}
    finally:
        gateway.stop()
        worker.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def gateway_url(shared_stack, redis_client):
    yield shared_stack["url"]
    # Flush between tests: the product's keys only (the broker's own keys stay).
    for key in redis_client.scan_iter(match="tokenrelay:{*", count=1000):
        redis_client.delete(key)


@pytest.fixture
def client(gateway_url):
    with Client(gateway_url) as c:
        yield c


@pytest.fixture
def isolated_settings(redis_server, stack_settings):
    """Settings for a stack of a test's own (own key prefix and queue), for tests that kill processes."""
    name = f"t{uuid.uuid4().hex[:8]}"
    return {**stack_settings, "key_prefix": f"tokenrelay-{name}", "queue_name": f"tokenrelay-{name}"}
