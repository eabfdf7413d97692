"""The layout's rules, checked in fresh interpreters: what each role loads, and what it must never load.

The gateway sends job ids and validates names; it never loads the worker, LangChain or LangGraph.
The client and the CLI's `run`/`watch` path need neither the server nor LangChain.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..support.processes import ROOT

HEAVY = ("worker", "langchain_core", "langchain_openai", "langgraph")


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(module.startswith(name + ".") for module in modules)


@pytest.mark.parametrize("role, code, forbidden", [
    ("gateway", "from api.app import create_app", HEAVY + ("tokenrelay.cli", "tokenrelay.engine")),
    ("gateway app built", "from api.app import create_app\nfrom tokenrelay.core.settings import Settings\n"
                          "create_app(Settings())", HEAVY + ("tokenrelay.cli", "tokenrelay.engine")),
    ("client", "import tokenrelay\nfrom tokenrelay import Client, AsyncClient",
     HEAVY + ("api", "celery", "redis", "tokenrelay.engine", "tokenrelay.cli")),
    # Against a closed port: the command goes all the way to its HTTP request and fails there.
    ("cli run/watch", "from tokenrelay.cli import main\n"
                      "for argv in (['run', 'hi', '--url', 'http://127.0.0.1:9'], ['watch', '0' * 32, '--url', "
                      "'http://127.0.0.1:9']):\n"
                      "    try:\n        main(argv)\n    except SystemExit:\n        pass",
     HEAVY + ("api", "celery", "redis", "tokenrelay.engine")),
    ("worker", "import worker.celery_app", ("api", "tokenrelay.cli")),
])
def test_each_role_loads_only_what_it_needs(role, code, forbidden):
    modules = modules_after(code)
    assert not [name for name in forbidden if loaded(modules, name)], role


def test_the_core_never_imports_langchain_the_worker_or_the_cli():
    modules = modules_after("import tokenrelay.core.protocol, tokenrelay.core.keys, tokenrelay.core.store, "
                            "tokenrelay.core.tasks, tokenrelay.core.registry, tokenrelay.core.logs, tokenrelay.core.status, "
                            "tokenrelay.core.lua, tokenrelay.events")
    assert not [name for name in HEAVY + ("api", "tokenrelay.cli", "tokenrelay.engine") if loaded(modules, name)]
