"""The command line itself: version, help texts and defaults, and clear refusals of bad values.
Run as the real `tokenrelay` command where what it prints matters; no server is needed."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys

import pytest

import tokenrelay
from tokenrelay.cli.commands import EXIT_CODES, EXIT_INTERRUPTED, HANDLERS
from tokenrelay.cli.parser import build_parser

from ..support.processes import ROOT

USAGE_ERROR = 2  # argparse's


def tokenrelay_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenrelay", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(HANDLERS)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_has_one_source():
    result = tokenrelay_cli("--version")
    assert result.returncode == 0
    # The installed metadata is built from tokenrelay.__version__ (pyproject reads it dynamically).
    assert result.stdout.strip() == f"tokenrelay {tokenrelay.__version__}"
    assert importlib.metadata.version("tokenrelay") == tokenrelay.__version__


def test_every_command_and_option_has_help_text():
    commands = subcommands()
    assert set(commands) == {"dev", "api", "worker", "run", "watch", "graph", "jobs", "key"}
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 5, f"{name} {action.dest}: no help text"


def test_help_shows_each_default():
    for name, parser in subcommands().items():
        text = " ".join(parser.format_help().split())  # argparse wraps lines: compare words
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                shown = "default: " + (str(action.default) if "default" not in action.help else "")
                assert shown in text, f"{name} {action.option_strings[0]}: default not shown"
    run_help = " ".join(tokenrelay_cli("run", "--help").stdout.split())
    for expected in ("--model MODEL a model the gateway lists (GET /v1/models) (default: demo)",
                     "(default: $TOKENRELAY_URL or http://127.0.0.1:8000)", "(default: 30)"):
        assert expected in run_help
    assert "default: 20" in " ".join(tokenrelay_cli("jobs", "--help").stdout.split())


@pytest.mark.parametrize("args, message", [
    (["run", "hi", "--max-tokens", "abc"], "argument --max-tokens: must be a whole number, 1 or more (got 'abc')"),
    (["run", "hi", "--max-tokens", "0"], "argument --max-tokens: must be 1 or more (got 0)"),
    (["run", "hi", "--tokens-per-second", "fast"], "argument --tokens-per-second: must be a number, 0 or more"),
    (["run", "hi", "--tokens-per-second", "-1"], "argument --tokens-per-second: must be 0 or more"),
    (["graph", "joke_poem", "--max-tokens", "many"], "argument --max-tokens: must be a whole number"),
    (["api", "--port", "http"], "argument --port: must be a port number, 1 to 65535 (got 'http')"),
    (["dev", "--workers", "two"], "argument --workers: must be a whole number, 1 or more (got 'two')"),
    (["jobs", "--limit", "-3"], "argument --limit: must be 1 or more (got -3)"),
])
def test_bad_values_are_refused_with_a_clear_message(args, message):
    result = tokenrelay_cli(*args)
    assert result.returncode == USAGE_ERROR
    assert message in result.stderr
    assert "invalid" not in result.stderr and "_positive_int" not in result.stderr and "Traceback" not in result.stderr


def test_exit_codes_are_distinct():
    codes = [*EXIT_CODES.values(), USAGE_ERROR, EXIT_INTERRUPTED]
    assert len(codes) == len(set(codes))
    assert EXIT_CODES == {"succeeded": 0, "failed": 1, "cancelled": 3}
    epilog = " ".join(tokenrelay_cli("run", "--help").stdout.split())
    assert re.search(r"0 succeeded, 1 failed .*2 usage error, 3 cancelled .*130 interrupted", epilog)


def test_the_worker_help_quotes_the_settings_default():
    from tokenrelay.core.settings import Settings

    help_text = " ".join(subcommands()["worker"].format_help().split())
    assert f"else {Settings.model_fields['worker_concurrency'].default})" in help_text
