"""An `openai:*` model listed without OPENAI_API_KEY: the worker warns at start-up, and a client whose
job fails for that reason is told what is missing (never a key, never internal text)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tokenrelay import ClientError
from tokenrelay.langchain import RelayChatModel

from ..support.processes import ROOT, Process, stack_env, start_gateway, start_worker, wait_for_workers, wait_until

WARNING = "openai:echo: OPENAI_API_KEY (or OPENAI_BASE_URL) is not set, so jobs of these models will fail"
WHAT_IS_MISSING = "openai:* models need OPENAI_API_KEY (or OPENAI_BASE_URL) set there"


@pytest.fixture
def keyless_stack(redis_server, isolated_settings):
    settings = {**isolated_settings, "models": "demo,openai:echo", "openai_api_key": "", "openai_base_url": ""}
    env = {k: v for k, v in stack_env(redis_server.url, **settings).items() if not k.startswith("OPENAI_")}
    worker = start_worker(env, name="worker-keyless")
    processes: list[Process] = [worker]
    try:
        gateway, url = start_gateway(env)
        processes.append(gateway)
        wait_for_workers(url, 1)
        yield url, worker
    finally:
        for process in processes:
            process.stop()


def test_worker_warns_at_start_up_and_the_client_learns_what_is_missing(keyless_stack):
    url, worker = keyless_stack
    wait_until(lambda: WARNING in worker.output(), message="the worker's start-up warning")

    llm = RelayChatModel(base_url=url, model="openai:echo")
    with pytest.raises(ClientError) as failure:
        llm.invoke("hello")
    assert failure.value.error_type == "configuration_error"
    assert WHAT_IS_MISSING in failure.value.message

    result = subprocess.run([sys.executable, "-m", "tokenrelay", "run", "hello", "--model", "openai:echo",
                             "--url", url], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("TOKENRELAY_")})
    assert result.returncode == 1
    assert WHAT_IS_MISSING in result.stderr and "(configuration_error)" in result.stderr

    # The offline model runs all the same.
    assert RelayChatModel(base_url=url, model="demo", params={"max_tokens": 3}).invoke("hi").content
