"""The `tokenrelay` command, run as a real subprocess against real gateways, workers and servers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess

import httpx

from tokenrelay import Client
from tokenrelay.cli.dev import DEMO_PARAMS, DEMO_PROMPT
from tokenrelay.cli.embedded import free_port
from tokenrelay.engine.demo import demo_tokens

from ..support.cli import cli, job_id_from, spawn_cli
from ..support.processes import ROOT, stack_env, wait_until

SEPARATOR = "|"


def finished_events(client: Client, prompt: str, max_tokens: int = 20) -> tuple[str, list]:
    # Paced, so that the worker writes several token events (unpaced tokens are batched together).
    job = client.submit(prompt, params={"max_tokens": max_tokens, "tokens_per_second": 200})
    events = list(client.stream(job["id"]))
    assert events[-1].data["status"] == "succeeded"
    return job["id"], events


def token_texts(events) -> list[str]:
    return [e.data["text"] for e in events if e.event == "token"]


# --- run ---------------------------------------------------------------------------------------


def test_run_prints_each_token_event_once_in_order_and_exits_0(gateway_url, client: Client):
    result = cli("run", "hello from the command line", "--separator", SEPARATOR, "--max-tokens", "40",
                 "--tokens-per-second", "200", "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    job_id = job_id_from(result.stderr)
    record = client.get(job_id)
    assert record["status"] == "succeeded" and record["usage"]["output_tokens"] == 40
    # One separator after each token event, then one newline: nothing lost, doubled or reordered.
    assert result.stdout.endswith(SEPARATOR + "\n")
    printed = result.stdout[: -len(SEPARATOR + "\n")].split(SEPARATOR)
    assert printed == token_texts(client.stream(job_id))
    assert "".join(printed) == record["output"]["text"]


def test_run_without_separator_prints_the_plain_text(gateway_url, client: Client):
    result = cli("run", "plain text please", "--max-tokens", "12", "--tokens-per-second", "0",
                 env={**os.environ, "TOKENRELAY_URL": gateway_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout == client.get(job_id_from(result.stderr))["output"]["text"] + "\n"


def test_run_with_an_unknown_model_exits_1_with_the_gateway_message(gateway_url):
    result = cli("run", "hi", "--model", "no-such-model", "--url", gateway_url)
    assert result.returncode == 1
    assert "'no-such-model' is not available" in result.stderr
    assert result.stdout == ""


def test_run_of_a_failing_job_exits_1_with_the_error_message(gateway_url, client: Client):
    result = cli("run", "hi", "--model", "openai:error-401", "--url", gateway_url)
    assert result.returncode == 1
    record = client.get(job_id_from(result.stderr))
    assert record["status"] == "failed"
    assert f"error: {record['error']['message']}" in result.stderr
    assert result.stdout == "\n"


def test_run_of_a_cancelled_job_exits_3(gateway_url, client: Client):
    process, out, err = spawn_cli("run", "cancel me", "--max-tokens", "2000", "--tokens-per-second", "50",
                                  "--url", gateway_url)
    try:
        job_id = wait_until(lambda: re.search(r"job ([0-9a-f]{32})", err.text), message="the job id").group(1)
        wait_until(lambda: out.text, message="first tokens")
        client.cancel(job_id)
        assert process.wait(20) == 3  # not 2: that is a usage error
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert f"job {job_id} cancelled" in err.join()
    assert client.get(job_id)["status"] == "cancelled"


def test_ctrl_c_during_run_cancels_the_job(gateway_url, client: Client):
    process, out, err = spawn_cli("run", "interrupt me", "--max-tokens", "2000", "--tokens-per-second", "50",
                                  "--url", gateway_url)
    try:
        job_id = wait_until(lambda: re.search(r"job ([0-9a-f]{32})", err.text), message="the job id").group(1)
        wait_until(lambda: out.text, message="first tokens")
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert out.join().endswith("\n")
    wait_until(lambda: client.get(job_id)["status"] == "cancelled", message="the job cancelled")


def test_run_against_no_gateway_exits_1():
    result = cli("run", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach the gateway" in result.stderr


# --- watch -------------------------------------------------------------------------------------


def test_watch_of_a_finished_job_prints_its_whole_text(gateway_url, client: Client):
    job_id, events = finished_events(client, "watch me")
    result = cli("watch", job_id, "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == client.get(job_id)["output"]["text"] + "\n"
    assert result.stdout == "".join(token_texts(events)) + "\n"


def test_watch_from_a_mid_stream_event_prints_only_the_rest(gateway_url, client: Client):
    job_id, events = finished_events(client, "resume me")
    tokens = [e for e in events if e.event == "token"]
    assert len(tokens) >= 3, "need a middle token event"
    middle = tokens[len(tokens) // 2]
    rest = tokens[tokens.index(middle) + 1 :]
    result = cli("watch", job_id, "--from", middle.id, "--separator", SEPARATOR, "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(t.data["text"] + SEPARATOR for t in rest) + "\n"


def test_watch_of_an_unknown_job_exits_1(gateway_url):
    result = cli("watch", "0" * 32, "--url", gateway_url)
    assert result.returncode == 1
    assert "not found" in result.stderr


# --- dev ---------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, ppid, start time) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (pid -> start time, to tell a reused pid apart)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))):
            children.setdefault(stat[1], []).append((int(entry), stat[2]))
    found: dict[int, str] = {}
    pending = [pid]
    while pending:
        for child, started in children.get(pending.pop(), []):
            found[child] = started
            pending.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    running = []
    for pid, started in processes.items():
        stat = _proc_stat(pid)
        if stat and stat[2] == started and stat[0] != "Z":
            running.append(pid)
    return running


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def dev_env(tmp_path, **overrides: str) -> dict[str, str]:
    """No TOKENRELAY_* or OPENAI_* of the caller's; temporary dirs (logs, server data) under the test's tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENRELAY_", "OPENAI_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path), **overrides}


def kill_all(process: subprocess.Popen, started: dict[int, str]) -> None:
    """Clean-up after a failed test: nothing of it may outlive the test run."""
    for pid in [process.pid, *still_running(started)]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def test_dev_serves_the_demo_then_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    process, out, err = spawn_cli("dev", "--port", str(port), env=dev_env(tmp_path))
    started: dict[int, str] = {}
    try:
        expected = "".join(demo_tokens(DEMO_PROMPT, DEMO_PARAMS["max_tokens"])) + "\n"
        wait_until(lambda: out.text == expected or process.poll() is not None, timeout_s=90,
                   message="the demo job's tokens")
        assert out.text == expected, err.text
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).json()
        assert ready["redis"] is True and ready["workers"] >= 1
        assert f"http://127.0.0.1:{port}/docs" in err.text
        # The banner names a `tokenrelay` another terminal can run as it is, and warns about the
        # openai:* model that cannot run without a key (dev_env sets none).
        command = re.search(r"^or: (\S+) run \"Hello\"", err.text, re.MULTILINE).group(1)
        assert "/" in command and "activate" in err.text
        version = subprocess.run([str(ROOT / command), "--version"], cwd=ROOT, capture_output=True, text=True,
                                 env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert version.returncode == 0 and version.stdout.startswith("tokenrelay ")
        assert "warning  openai:gpt-4o-mini: OPENAI_API_KEY (or OPENAI_BASE_URL) is not set" in err.text
        data_dir = re.search(r"data in (\S+),", err.text).group(1)
        redis_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/0", err.text).group(1))
        assert data_dir.startswith(str(tmp_path)) and os.path.isdir(data_dir) and answers(redis_port)

        started = descendants(process.pid)
        assert len(started) >= 3, started  # the server, a worker, the gateway

        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0, err.join()
        assert still_running(started) == []
        assert not os.path.exists(data_dir)
        assert not answers(port) and not answers(redis_port)
        assert "Stopped." in err.join()
    finally:
        if process.poll() is None or still_running(started):
            kill_all(process, started)


def test_dev_stops_everything_and_exits_1_when_a_worker_dies(redis_server, isolated_settings, tmp_path):
    port = free_port()
    # TOKENRELAY_REDIS_URL set: dev uses that server instead of an embedded one.
    env = dev_env(tmp_path, **{k: v for k, v in stack_env(redis_server.url, **isolated_settings).items()
                     if k.startswith("TOKENRELAY_")})
    process, out, err = spawn_cli("dev", "--port", str(port), "--no-demo", env=env)
    started: dict[int, str] = {}
    try:
        wait_until(lambda: "Press Ctrl-C to stop." in err.text or process.poll() is not None, timeout_s=90,
                   message="dev to be up")
        assert "Press Ctrl-C to stop." in err.text, err.text
        assert redis_server.url in err.text and "embedded" not in err.text
        started = descendants(process.pid)
        assert len(started) >= 2, started  # a worker and the gateway
        worker = next(pid for pid in started if b"celery" in open(f"/proc/{pid}/cmdline", "rb").read())

        os.kill(worker, signal.SIGKILL)
        assert process.wait(20) == 1
        assert still_running(started) == []
        assert not answers(port)
        stderr = err.join()
        assert "worker 1 exited unexpectedly" in stderr and "last lines of" in stderr
    finally:
        if process.poll() is None or still_running(started):
            kill_all(process, started)
    assert redis_server.process.poll() is None  # a server it did not start is left alone
