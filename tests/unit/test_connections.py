"""tokenrelay.core.connections: one Redis URL for every topology, and the broker it implies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenrelay.core.connections import (
    BrokerUrlMissing,
    RedisUrlError,
    celery_broker,
    parse_redis_url,
    redact,
)

from ..support.processes import ROOT


def test_single_server_urls_pass_through():
    for url in ("redis://127.0.0.1:6379/0", "rediss://u:p@h:6380/1", "unix:///tmp/r.sock?db=2"):
        target = parse_redis_url(url)
        assert (target.kind, target.url) == ("single", url)


def test_sentinel_url_names_its_sentinels_service_and_db():
    target = parse_redis_url("redis+sentinel://app:s%40cret@s1:26379,s2,[::1]:26380/mymaster/3")
    assert target.kind == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 3, "app", "s@cret")
    assert parse_redis_url("redis+sentinel://s1:26379/mymaster").db == 0


def test_cluster_url_seeds_from_any_nodes():
    target = parse_redis_url("redis+cluster://:pw@n1:7000,n2:7001")
    assert (target.kind, target.hosts, target.password, target.is_cluster) == (
        "cluster", (("n1", 7000), ("n2", 7001)), "pw", True)


@pytest.mark.parametrize("url", ["http://x", "redis+sentinel://s1:26379", "redis+sentinel://s1/a/b/c",
                                 "redis+sentinel://s1/svc/x", "redis+cluster://n1:7000/1", "redis+cluster://n1:port",
                                 "redis+cluster://"])
def test_bad_urls_are_refused_with_a_reason(url):
    with pytest.raises(RedisUrlError):
        parse_redis_url(url)


def test_messages_never_show_a_password():
    assert redact("redis+cluster://u:secret@n1:7000,n2") == "redis+cluster://u:***@n1:7000,n2"
    assert redact("redis://:secret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    with pytest.raises(RedisUrlError) as refused:
        parse_redis_url("redis+cluster://u:secret@n1:bad")
    assert "secret" not in str(refused.value)


def test_broker_follows_the_redis_url_or_its_own():
    assert celery_broker("redis://h:6379/0", None) == ("redis://h:6379/0", {})
    assert celery_broker("redis+cluster://n1:7000", "amqp://g:g@mq//") == ("amqp://g:g@mq//", {})
    url, options = celery_broker("redis+sentinel://:pw@s1:26379,s2:26380/svc/2", None)
    assert url == "sentinel://:pw@s1:26379/2;sentinel://s2:26380/2"
    assert options["master_name"] == "svc"
    with pytest.raises(BrokerUrlMissing, match="TOKENRELAY_BROKER_URL"):
        celery_broker("redis+cluster://n1:7000", None)


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "tokenrelay", "worker"],
    [sys.executable, "-m", "tokenrelay", "api"],
    [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env"],
    [sys.executable, "-m", "celery", "-A", "worker", "worker"],
])
def test_every_command_stops_at_start_on_a_cluster_without_a_broker(command):
    env = {"PATH": "/usr/bin:/bin", "TOKENRELAY_REDIS_URL": "redis+cluster://127.0.0.1:1"}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "TOKENRELAY_BROKER_URL" in line]
    assert len(lines) == 1 and lines[0].startswith("tokenrelay: the Redis URL is a cluster"), done.stderr[-500:]
    assert "Traceback" not in done.stderr
