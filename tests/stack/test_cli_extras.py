"""`tokenrelay run` on a terminal (live status line), `--json`, and `tokenrelay jobs`, run as real
subprocesses against the real stack."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from tokenrelay import Client
from tokenrelay.cli.output import StatusLine

from ..support.cli import cli, job_id_from
from ..support.processes import ROOT, stack_env, start_gateway

ESC = "\x1b"


def run_on_a_terminal(*args: str, timeout_s: float = 60, stdout_too: bool = False,
                      columns: int = 100) -> tuple[int, str, str]:
    """Run the CLI with stderr (and stdout if `stdout_too`) on a pseudo-terminal of `columns` columns;
    returns (exit code, stdout if piped, what the terminal received)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "tokenrelay", *args], cwd=ROOT,
                               stdout=slave if stdout_too else subprocess.PIPE, stderr=slave,
                               env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    terminal = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: the process is gone
                break
            if not chunk:
                break
            terminal += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    stdout = "" if stdout_too else process.stdout.read().decode()
    return process.wait(10), stdout, terminal.decode(errors="replace")


def test_run_on_a_terminal_shows_a_status_line_that_disappears(gateway_url, client: Client):
    code, stdout, terminal = run_on_a_terminal("run", "status please", "--max-tokens", "30",
                                               "--tokens-per-second", "40", "--url", gateway_url)
    assert code == 0, terminal
    job_id = job_id_from(terminal.replace("\r\n", "\n"))
    assert stdout == client.get(job_id)["output"]["text"] + "\n"  # the answer itself has no trace of it
    assert ESC + "7" in terminal and "tokens/s" in terminal and "s]" in terminal
    counts = [int(n) for n in re.findall(r"\[(\d+) tokens", terminal)]
    assert counts == sorted(counts) and len(set(counts)) >= 3 and counts[-1] == 30  # it went up live
    # Every drawing is erased: the last thing on the terminal is the erase, nothing after it.
    assert terminal.rstrip("\r\n").endswith(ESC + "8" + ESC + "[J")
    assert terminal.count(ESC + "7") == terminal.count(ESC + "8" + ESC + "[J")


STATUS_DRAWING = re.compile(r"\x1b7\x1b\[2m[^\x1b]*\x1b\[0m")
STATUS_ERASE = "\x1b8\x1b[J"


def test_status_line_never_mixes_with_the_answer_on_a_shared_terminal(gateway_url, client: Client):
    code, _, terminal = run_on_a_terminal("run", "one terminal for both", "--max-tokens", "60",
                                          "--tokens-per-second", "60", "--url", gateway_url, stdout_too=True,
                                          columns=50)
    assert code == 0, terminal
    drawings = STATUS_DRAWING.findall(terminal)
    assert drawings and all(len(d) - len("\x1b7\x1b[2m\x1b[0m") < 50 for d in drawings)
    # Without its drawings and erasures, the terminal holds exactly the job line and the answer.
    plain = STATUS_DRAWING.sub("", terminal).replace(STATUS_ERASE, "").replace("\r\n", "\n")
    job_id = job_id_from(plain)
    assert plain == f"job {job_id}\n" + client.get(job_id)["output"]["text"] + "\n"


def test_status_line_is_cut_to_the_room_left_on_the_line():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Terminal()
    status = StatusLine(err, enabled=True, shares_line=True)  # no real terminal size: 80 columns
    status.printed("x" * 75)
    status.show()
    assert err.getvalue() == ""  # 4 columns left: no room for a status
    status.printed("\nabc")
    status.show()
    drawn = STATUS_DRAWING.findall(err.getvalue())
    assert len(drawn) == 1 and "queued" in drawn[0]  # no event yet: no worker has started the job
    status.hide()
    assert err.getvalue().endswith(STATUS_ERASE)


def test_run_piped_prints_nothing_extra(gateway_url):
    result = cli("run", "piped", "--max-tokens", "10", "--tokens-per-second", "100", "--url", gateway_url)
    assert result.returncode == 0
    assert ESC not in result.stdout + result.stderr and "tokens/s" not in result.stderr
    assert result.stderr.splitlines() == [f"job {job_id_from(result.stderr)}"]


def test_run_json_prints_every_event_as_a_json_line(gateway_url, client: Client):
    result = cli("run", "json please", "--json", "--max-tokens", "12", "--tokens-per-second", "100",
                 "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    job_id = job_id_from(result.stderr)
    expected = [{"id": e.id, "event": e.event, "data": e.data} for e in client.stream(job_id)]
    assert lines == expected
    assert lines[0]["event"] == "metadata" and lines[-1]["event"] == "end"


def test_watch_json_of_a_failed_job_exits_1(gateway_url, client: Client):
    job = client.submit("fail", model="openai:error-401")
    result = cli("watch", job["id"], "--json", "--url", gateway_url)
    assert result.returncode == 1
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert events == ["metadata", "error", "end"]
    assert f"job {job['id']} failed" in result.stderr


def test_jobs_lists_recent_jobs_newest_first(gateway_url, client: Client):
    first = client.submit("one", params={"max_tokens": 3, "tokens_per_second": 0})
    second = client.submit("two", params={"max_tokens": 4, "tokens_per_second": 0})
    list(client.stream(first["id"]))
    list(client.stream(second["id"]))
    result = cli("jobs", "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "MODEL", "TOKENS", "CREATED"]
    assert [row.split()[:4] for row in rows] == [[second["id"], "succeeded", "demo", "4"],
                                                [first["id"], "succeeded", "demo", "3"]]
    as_json = cli("jobs", "--json", "--limit", "1", "--url", gateway_url)
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [second["id"]]


def test_jobs_without_a_gateway_exits_1():
    result = cli("jobs", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot reach the gateway" in result.stderr


def test_status_line_ticks_says_queued_and_leaves_nothing_after_ctrl_c(redis_server, isolated_settings):
    """A gateway with no worker: the job stays queued. The status line says so and its clock moves on
    while nothing arrives; Ctrl-C erases it before anything else is printed."""
    gateway, url = start_gateway(stack_env(redis_server.url, **isolated_settings))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "tokenrelay", "run", "nobody is working", "--url", url],
                               cwd=ROOT, stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    terminal = ""

    def read(until, timeout_s: float) -> None:
        nonlocal terminal
        deadline = time.monotonic() + timeout_s
        while not until() and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                terminal += chunk.decode(errors="replace")

    try:
        read(lambda: len(set(re.findall(r"\[queued · (\d+\.\d)s\]", terminal))) >= 4, timeout_s=20)
        process.send_signal(signal.SIGINT)
        read(lambda: process.poll() is not None and "interrupted" in terminal, timeout_s=20)
        assert process.wait(10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        gateway.stop()
    ticks = [float(seconds) for seconds in re.findall(r"\[queued · (\d+\.\d)s\]", terminal)]
    assert len(set(ticks)) >= 4 and ticks == sorted(ticks)  # it moved on with no event at all
    assert "tokens" not in terminal.split("interrupted")[0].split("job ")[-1].split("\n", 1)[1]  # never "0 tokens"
    # Every drawing was erased, and the last erase came before the interrupt's own lines.
    assert terminal.count(ESC + "7") == terminal.count(ESC + "8" + ESC + "[J")
    after_last_erase = terminal.rsplit(ESC + "8" + ESC + "[J", 1)[1]
    assert ESC + "7" not in after_last_erase and "interrupted: cancelling job" in after_last_erase
