"""Fault tests: each starts its own Redis server (so it can restart, stall or starve it) and a stack on it."""

from __future__ import annotations

import uuid

import pytest

from tokenrelay.cli.embedded import EmbeddedServer


@pytest.fixture
def fault_settings(stack_settings):
    name = f"f{uuid.uuid4().hex[:8]}"
    return {**stack_settings, "key_prefix": f"tokenrelay-{name}", "queue_name": f"tokenrelay-{name}",
            "keepalive_s": 1}


@pytest.fixture
def own_redis():
    servers: list[EmbeddedServer] = []

    def start(**options) -> EmbeddedServer:
        server = EmbeddedServer(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
