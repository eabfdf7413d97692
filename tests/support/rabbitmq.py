"""A RabbitMQ node of the test's own (Debian's `rabbitmq-server`): its own node name, ports, epmd, cookie,
data and config in a temporary directory, no plugins. It never touches a node already running here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tokenrelay.cli.embedded import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the script itself, not Debian's wrapper that changes user
START_TIMEOUT_S = 90.0


def available() -> bool:
    return Path(SERVER).exists() and shutil.which("erl") is not None


class RabbitMQServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.epmd_port = free_port()
        self.directory: str | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> "RabbitMQServer":
        self.directory = tempfile.mkdtemp(prefix="tokenrelay-rabbitmq-")
        base = Path(self.directory)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                                            "loopback_users.guest = true\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"tokenrelay-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(self.epmd_port),  # its own epmd, not the machine's
            "RABBITMQ_BASE": str(base),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
            "LANG": "C.UTF-8",
        }
        self.process = subprocess.Popen([SERVER], env=env, cwd=base, stdout=open(base / "server.log", "wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = Path(self.directory, "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rabbitmq-server exited at start-up:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"AMQP\x00\x00\x09\x01")
                    if sock.recv(8):  # Connection.Start: the broker speaks AMQP
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"rabbitmq-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        # The node started an epmd of its own (a daemon, on its own port): stop that one, and only it.
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "RabbitMQServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
