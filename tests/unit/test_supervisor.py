"""The child-process supervisor shared by `tokenrelay dev`, the test stacks and the benchmark, on real processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from tokenrelay.cli.supervisor import Child, ChildExited, NotReady, stop_all, wait_ready

from ..support.processes import wait_until


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_output_goes_to_the_log_and_a_child_that_exits_is_reported_with_its_last_lines(tmp_path):
    code = "import sys\nfor i in range(50): print(f'line {i}')\nprint('boom', file=sys.stderr)\nsys.exit(3)"
    child = Child("worker 1", python(code), env=dict(os.environ), log_path=tmp_path / "logs" / "w.log")
    with pytest.raises(ChildExited) as raised:
        wait_ready(lambda: False, what="worker", timeout_s=30, watch=[child], interval_s=0.01)
    message = str(raised.value)
    assert message.startswith("the worker 1 exited unexpectedly (code 3); last lines of ")
    assert message.endswith("line 49\nboom\n") and "\nline 21\n" in message and "line 20\n" not in message
    assert "line 0\n" in child.output()


def test_stop_terminates_gracefully_first(tmp_path):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('graceful', flush=True), sys.exit(0)))\n"
            "print('up', flush=True)\ntime.sleep(60)")
    child = Child("gateway", python(code), env=dict(os.environ), log_path=tmp_path / "g.log")
    wait_until(lambda: "up" in child.output(), message="child up")
    child.stop()
    assert child.returncode == 0 and "graceful" in child.output()


def test_a_child_that_ignores_sigterm_is_killed_with_its_whole_group(tmp_path):
    # The child starts a grandchild in its group, ignores SIGTERM, and prints the grandchild's pid.
    code = ("import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
            "print(g.pid, flush=True)\ntime.sleep(60)")
    child = Child("stubborn", python(code), env=dict(os.environ), log_path=tmp_path / "s.log")
    grandchild = int(wait_until(lambda: child.output().strip(), message="grandchild pid"))
    started = time.monotonic()
    stop_all([child], timeout_s=1.0)
    assert 0.9 < time.monotonic() - started < 10
    assert child.returncode == -signal.SIGKILL
    wait_until(lambda: gone(grandchild), timeout_s=5, message="grandchild killed")


def test_hurry_cuts_the_graceful_wait_short_and_slow_stops_are_noted_once(tmp_path):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    children = [Child(f"w{i}", python(code), env=dict(os.environ), log_path=tmp_path / f"{i}.log") for i in range(2)]
    for child in children:
        wait_until(lambda: "up" in child.output(), message="child up")
    hurry, notes = threading.Event(), []
    threading.Timer(4.0, hurry.set).start()
    started = time.monotonic()
    stop_all(children, timeout_s=60, hurry=hurry, slow_note=lambda: notes.append(time.monotonic() - started))
    assert 3.5 < time.monotonic() - started < 30
    assert len(notes) == 1 and 2.5 < notes[0] < 4.5
    assert all(child.returncode == -signal.SIGKILL for child in children)


def test_wait_ready_times_out_or_stops_when_asked():
    with pytest.raises(NotReady, match="the gateway not ready after 0 s"):
        wait_ready(lambda: False, what="the gateway", timeout_s=0.2, interval_s=0.01)
    stop = threading.Event()
    stop.set()
    assert wait_ready(lambda: False, what="x", timeout_s=10, stop=stop) is False
    calls = iter([False, False, True])
    assert wait_ready(lambda: next(calls), what="x", timeout_s=10, interval_s=0.01) is True
