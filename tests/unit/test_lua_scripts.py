"""tokenrelay/core/lua: every script loads on a real server, opens with named locals, and shares one prelude."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest

from tokenrelay.core.lua import PRELUDE, SCRIPTS, load_script
from tokenrelay.core.status import JobStatus

from ..support.processes import ROOT

LUA_DIR = files("tokenrelay.core.lua")
HEADER = re.compile(r"local (\w+) = (KEYS|ARGV)\[(\d+)\]")
INDEXED = re.compile(r"\b(KEYS|ARGV)\[\d+\]")


def source(name: str) -> str:
    return LUA_DIR.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def test_every_lua_file_is_a_known_script_or_the_prelude():
    on_disk = {Path(entry.name).stem for entry in LUA_DIR.iterdir() if entry.name.endswith(".lua")}
    assert on_disk == {*SCRIPTS, PRELUDE}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_compiles_on_the_server(name, redis_client):
    sha = redis_client.script_load(load_script(name))
    assert redis_client.script_exists(sha) == [True]


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_open_with_named_locals_and_never_index_keys_or_argv_after(name):
    lines = [line for line in source(name).splitlines() if line.strip() and not line.startswith(("--", "#!"))]
    header = []
    for line in lines:
        match = HEADER.match(line)
        if not match:
            break
        header.append((match.group(2), int(match.group(3))))
    assert header, f"{name}.lua opens with no named KEYS/ARGV locals"
    for table in ("KEYS", "ARGV"):
        indexes = [index for kind, index in header if kind == table]
        assert indexes == list(range(1, len(indexes) + 1)), f"{name}.lua: {table} locals out of order"
    body = lines[len(header):]
    assert not [line for line in body if INDEXED.search(line)], f"{name}.lua indexes KEYS/ARGV in its body"


def test_the_prelude_comes_first_except_after_a_shebang():
    prelude = source(PRELUDE)
    for name in SCRIPTS:
        text = load_script(name)
        assert text.count(prelude) == 1
        if name == "finish":
            assert text.startswith("#!lua flags=allow-oom\n" + prelude)
        else:
            assert text.startswith(prelude) and "#!" not in text


def test_the_terminal_statuses_are_written_once_in_lua():
    for name in SCRIPTS:
        assert "'succeeded'" not in source(name), f"{name}.lua tests statuses itself: use is_terminal()"
    assert "'succeeded'" in source(PRELUDE)


@pytest.mark.parametrize("status", [*JobStatus, "", "unknown"])
def test_the_prelude_agrees_with_job_status(status, redis_client):
    script = source(PRELUDE) + "\nreturn is_terminal(ARGV[1]) and 1 or 0"
    expected = JobStatus(status).is_terminal if status in set(JobStatus) else False
    assert redis_client.eval(script, 0, status) == int(expected)


def test_no_lua_is_left_in_python_modules():
    python = [*ROOT.joinpath("tokenrelay").rglob("*.py"), *ROOT.joinpath("api").rglob("*.py"),
              *ROOT.joinpath("worker").rglob("*.py")]
    assert not [path.relative_to(ROOT) for path in python if "redis.call(" in path.read_text(encoding="utf-8")]


def test_unknown_script_names_are_refused():
    with pytest.raises(ValueError):
        load_script("../../settings")
