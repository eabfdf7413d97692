"""Static checks of the container setup: docker-compose.yml, Dockerfile and .dockerignore.

No container is started: the compose file is parsed with PyYAML and checked against the code it
runs (settings fields, importable entry points, CLI options). `docker compose config` runs only
where the docker CLI has the compose plugin.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tokenrelay.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = ("gateway", "worker")
# ${NAME}, ${NAME:-default}, ${NAME-default}: compose interpolation.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def tokens(command: object) -> list[str]:
    """A compose `command`/healthcheck `test` (string or list) as a flat list of words."""
    if command is None:
        return []
    if isinstance(command, str):
        return command.split()
    words: list[str] = []
    for item in command:
        words.extend(str(item).split())
    return words


def environment(service: dict) -> dict[str, str | None]:
    """A service's environment as a mapping, whichever of compose's two syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(key): None if value is None else str(value) for key, value in env.items()}
    result: dict[str, str | None] = {}
    for item in env:
        name, sep, value = str(item).partition("=")
        result[name] = value if sep else None
    return result


def with_defaults(value: str) -> str:
    """Compose interpolation with an empty host environment: `${X:-d}` -> `d`, `${X}` -> ``."""
    return INTERPOLATION.sub(lambda match: match.group("default") or "", value)


def dockerfile_of(service: dict) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    return (ROOT / context / dockerfile).resolve()


def settings_aliases() -> dict[str, str]:
    """Environment names accepted through validation aliases (e.g. OPENAI_API_KEY) -> field."""
    aliases: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
        for choice in choices:
            if isinstance(choice, str):
                aliases[choice] = field_name
    return aliases


# -- structure -------------------------------------------------------------------------------------


def test_services_exist(services):
    assert {"valkey", "gateway", "worker", "flower"} <= set(services)


def test_valkey_persists_with_aof_and_has_a_healthcheck(compose, services):
    valkey = services["valkey"]
    assert valkey["image"].split(":")[0] in ("valkey/valkey", "redis")
    words = tokens(valkey.get("command"))
    pairs = {(words[i], words[i + 1]) for i in range(len(words) - 1)}
    assert ("--appendonly", "yes") in pairs
    assert ("--appendfsync", "everysec") in pairs

    test = " ".join(tokens(valkey["healthcheck"]["test"]))
    assert "valkey-cli ping" in test or "redis-cli ping" in test

    data_volumes = [v for v in valkey.get("volumes", []) if str(v).endswith(":/data")]
    assert data_volumes, "valkey needs a volume for /data"
    volume_name = str(data_volumes[0]).split(":")[0]
    assert volume_name in (compose.get("volumes") or {}), "the /data volume must be a named volume"


@pytest.mark.parametrize("name", [*APP_SERVICES, "flower"])
def test_depends_on_healthy_valkey(services, name):
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form to carry a condition"
    assert depends_on["valkey"]["condition"] == "service_healthy"


def test_worker_can_scale(services):
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container_name prevents --scale worker=N"
    assert not worker.get("ports"), "fixed host ports prevent --scale worker=N"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    grace = str(worker.get("stop_grace_period", "10s"))
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", grace)
    assert match and grace, f"unexpected stop_grace_period {grace!r}"
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    assert seconds >= 30, "running jobs need time to finish on a warm shutdown"


def test_gateway_publishes_port_and_checks_readiness(services):
    gateway = services["gateway"]
    # Published on loopback unless told otherwise: without API keys the gateway is open to anyone.
    assert "${TOKENRELAY_PUBLISH_HOST:-127.0.0.1}:8000:8000" in [str(port) for port in gateway["ports"]]
    test = " ".join(tokens(gateway["healthcheck"]["test"]))
    assert "/ready" in test
    assert "curl" not in test and "wget" not in test, "python:3.11-slim has neither curl nor wget"
    assert "urllib" in test


def test_flower_is_optional(services):
    flower = services["flower"]
    assert "monitoring" in flower.get("profiles", [])
    assert flower["image"].split(":")[0] == "mher/flower"
    assert "--broker=redis://valkey:6379/0" in tokens(flower["command"])
    assert any(str(port).endswith("5555:5555") for port in flower["ports"])


def test_every_built_service_uses_the_same_dockerfile(services):
    dockerfiles = {name: dockerfile_of(service) for name, service in services.items() if "build" in service}
    assert set(APP_SERVICES) <= set(dockerfiles)
    assert len(set(dockerfiles.values())) == 1, dockerfiles
    assert next(iter(dockerfiles.values())) == (ROOT / "Dockerfile").resolve()
    assert (ROOT / "Dockerfile").is_file()
    # Services that build and name an image must agree on its name (one image for both roles).
    assert len({services[name].get("image") for name in dockerfiles}) == 1


# -- consistency with the code ---------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_environment_names_are_settings(services, name):
    env = environment(services[name])
    assert env.get("TOKENRELAY_REDIS_URL") == "redis://valkey:6379/0"
    aliases = settings_aliases()
    for var in env:
        if var.startswith("TOKENRELAY_"):
            field = var.removeprefix("TOKENRELAY_").lower()
            assert field in Settings.model_fields, f"{name}: {var} is not a Settings field"
        else:
            assert var in aliases, f"{name}: {var} is read by no Settings field"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_environment_defaults_make_valid_settings(services, name, monkeypatch):
    """With nothing set on the host, the interpolated defaults must parse as Settings."""
    for var in [*Settings.model_fields, *settings_aliases()]:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(f"TOKENRELAY_{var.upper()}", raising=False)
    for var, value in environment(services[name]).items():
        if value is not None:  # no value: passed through from the host only when set there
            monkeypatch.setenv(var, with_defaults(value))
    settings = load_settings()
    assert settings.redis_url == "redis://valkey:6379/0"
    assert settings.models
    # An empty base URL would be used as-is by the OpenAI client; it must be unset, not "".
    assert settings.openai_base_url is None


def test_gateway_and_worker_agree_on_shared_settings(services):
    gateway, worker = environment(services["gateway"]), environment(services["worker"])
    for var in set(gateway) & set(worker):
        assert gateway[var] == worker[var], var
    # The gateway's /ready counts workers by lease_ttl_s; the queue is shared.
    for var in ("TOKENRELAY_REDIS_URL", "TOKENRELAY_LEASE_TTL_S", "TOKENRELAY_RETENTION_S"):
        assert var in gateway and var in worker, var


def _check_gateway_command(words: list[str]) -> None:
    """`python -m api.server` (the header and connection limits, one process per core unless --workers):
    the module exists and parses the command's flags."""
    assert words[:3] == ["python", "-m", "api.server"]
    assert words[words.index("--host") + 1] == "0.0.0.0"
    assert words[words.index("--port") + 1] == "8000"
    assert callable(importlib.import_module("api.server").main)
    parser_help = subprocess.run([sys.executable, "-m", words[2], "--help"], capture_output=True, text=True,
                                 cwd=ROOT, check=True).stdout
    for flag in (word for word in words[3:] if word.startswith("--")):
        assert flag in parser_help, flag


def test_gateway_command_imports(services):
    _check_gateway_command(tokens(services["gateway"]["command"]))


def test_dockerfile_default_command_is_the_gateway():
    cmd_lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(cmd_lines) == 1
    _check_gateway_command(json.loads(cmd_lines[0].removeprefix("CMD ")))


def test_worker_command_imports(services):
    words = tokens(services["worker"]["command"])
    assert words[0] == "celery"
    app_module = words[words.index("-A") + 1]
    assert words[words.index("-A") + 2] == "worker"
    assert words[words.index("--pool") + 1] == "threads"
    module = importlib.import_module(app_module)
    from celery import Celery

    # `celery -A worker` looks up worker.app (built from the environment, without connecting).
    assert isinstance(getattr(module, "app"), Celery)


def _options(words: list[str]) -> list[str]:
    return [word.split("=")[0] for word in words if word.startswith("--")]


def test_command_options_exist():
    """Every --option in the app commands is known to the installed uvicorn and celery."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    checks = {
        "gateway": [sys.executable, "-m", "uvicorn", "--help"],
        "worker": [sys.executable, "-m", "celery", "worker", "--help"],
    }
    for name, help_cmd in checks.items():
        help_text = subprocess.run(help_cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        for option in _options(tokens(compose["services"][name]["command"])):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), f"{name}: {option}"


# -- Dockerfile and .dockerignore ------------------------------------------------------------------


def test_dockerfile_basics():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$|^FROM python:3\.11-slim", text, re.M)
    assert "PYTHONUNBUFFERED=1" in text
    assert re.search(r"^EXPOSE 8000$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert "--no-cache-dir" in text
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\[(test|dev)[],]", instructions), "no test/dev extras in the image"


def test_dockerignore_excludes_local_clutter():
    entries = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", ".pytest_cache", "**/__pycache__", "*.egg-info", ".env"):
        assert entry in entries, entry
    # The build needs these.
    for needed in ("pyproject.toml", "README.md", "tokenrelay", "api", "worker"):
        assert needed not in entries, needed


# -- docker compose itself, where it is installed --------------------------------------------------


def test_docker_compose_config_is_valid():
    docker = shutil.which("docker")
    if docker is None:
        # No docker CLI on this machine: the structural checks above are all that can run.
        return
    try:
        version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return
    if version.returncode != 0:
        # The docker CLI is here but without its compose plugin. `compose config` needs no engine,
        # only the plugin, so where the plugin exists this check runs; here it cannot.
        return
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
