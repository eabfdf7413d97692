"""API keys, job ownership and stream tokens, against a real gateway configured with keys."""

from __future__ import annotations

import httpx
import pytest

from api.auth import StreamTokens, hash_key, token_secret
from tokenrelay import Client
from tokenrelay.core.settings import Settings
from tokenrelay.errors import ClientError

from ..support.http import assert_error
from ..support.processes import Stack

KEYS = {"alice": "tr_alice-secret-key", "bob": "tr_bob-secret-key", "root": "tr_root-secret-key"}
JOB = {"model": "demo", "prompt": "mine", "params": {"max_tokens": 5, "tokens_per_second": 0}}


def key_entries() -> str:
    return ",".join(f"{name}:{hash_key(key)}" + (":admin" if name == "root" else "") for name, key in KEYS.items())


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def stack(redis_server, stack_settings):
    settings = {**stack_settings, "key_prefix": "tokenrelay-auth", "queue_name": "tokenrelay-auth",
                "api_keys": key_entries()}
    with Stack(redis_server.url, settings, workers=1) as stack:
        yield stack


@pytest.fixture(scope="module")
def alice_job(stack):
    with Client(stack.url, api_key=KEYS["alice"]) as client:
        job = client.submit("mine", params={"max_tokens": 5, "tokens_per_second": 0})
        list(client.stream(job["id"]))
        return job["id"]


def test_every_route_but_health_and_ready_needs_a_key(stack, alice_job):
    url = stack.url
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").status_code == 200
    for method, path in [("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{alice_job}"),
                         ("GET", f"/v1/jobs/{alice_job}/stream"), ("POST", f"/v1/jobs/{alice_job}/cancel"),
                         ("POST", f"/v1/jobs/{alice_job}/stream-token"), ("GET", "/openapi.json"),
                         ("GET", "/v2/unknown")]:
        response = httpx.request(method, url + path, json=JOB if method == "POST" else None)
        error = assert_error(response, 401, mentions="API key")
        assert error["type"] == "authentication_error" and response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer tr_not-a-key"},
    {"Authorization": f"Basic {KEYS['alice']}"},
    {"Authorization": "Bearer"},
    {"Authorization": f"Bearer {KEYS['alice']}x"},
])
def test_wrong_keys_are_refused(stack, headers):
    assert_error(httpx.post(f"{stack.url}/v1/jobs", json=JOB, headers=headers), 401, mentions="invalid API key")


@pytest.mark.parametrize("query", ["api_key", "key", "token", "access_token"])
def test_keys_are_never_accepted_in_query_strings(stack, alice_job, query):
    response = httpx.get(f"{stack.url}/v1/jobs/{alice_job}/stream", params={query: KEYS["alice"]})
    assert_error(response, 401)
    response = httpx.get(f"{stack.url}/v1/jobs/{alice_job}", params={query: KEYS["alice"]})
    assert_error(response, 401)


def test_another_key_gets_404_on_status_stream_cancel_and_token(stack, alice_job):
    url = stack.url
    for method, path in [("GET", f"/v1/jobs/{alice_job}"), ("GET", f"/v1/jobs/{alice_job}/stream"),
                         ("POST", f"/v1/jobs/{alice_job}/cancel"), ("POST", f"/v1/jobs/{alice_job}/stream-token")]:
        foreign = httpx.request(method, url + path, headers=bearer("bob"))
        unknown = httpx.request(method, url + path.replace(alice_job, "0" * 32), headers=bearer("bob"))
        assert_error(foreign, 404, param="job_id")
        # Indistinguishable from a job that does not exist, but for the id in the message.
        assert foreign.json()["error"]["message"].replace(alice_job, "X") == \
            unknown.json()["error"]["message"].replace("0" * 32, "X")
    assert httpx.get(f"{url}/v1/jobs/{alice_job}", headers=bearer("alice")).json()["status"] == "succeeded"


def test_an_admin_key_reads_every_job(stack, alice_job):
    with Client(stack.url, api_key=KEYS["root"]) as admin:
        assert admin.get(alice_job)["status"] == "succeeded"
        assert [e.event for e in admin.stream(alice_job)][-1] == "end"


def test_a_running_job_of_another_key_cannot_be_cancelled(stack):
    with Client(stack.url, api_key=KEYS["alice"]) as alice, Client(stack.url, api_key=KEYS["bob"]) as bob:
        job = alice.submit("slow", params={"max_tokens": 20, "tokens_per_second": 40})
        with pytest.raises(ClientError) as refused:
            bob.cancel(job["id"])
        assert refused.value.status_code == 404
        events = list(alice.stream(job["id"]))
        assert events[-1].data["status"] == "succeeded"


def _stream_with_token(url: str, job_id: str, token: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{url}/v1/jobs/{job_id}/stream", params={"token": token}, timeout=10, **kwargs)


def test_a_stream_token_reads_that_one_job_and_nothing_else(stack, alice_job):
    url = stack.url
    issued = httpx.post(f"{url}/v1/jobs/{alice_job}/stream-token", headers=bearer("alice"))
    assert issued.status_code == 200
    token = issued.json()["token"]
    assert issued.json()["stream_url"] == f"/v1/jobs/{alice_job}/stream?token={token}"
    # No header at all, like a browser's EventSource.
    response = httpx.get(url + issued.json()["stream_url"], timeout=10)
    assert response.status_code == 200 and "event: end" in response.text
    # Resume works with the token too.
    response = _stream_with_token(url, alice_job, token, headers={"Last-Event-ID": "1-2"})
    assert response.status_code == 200 and "id: 1-2\n" not in response.text and "id: 1-3\n" in response.text
    # Not another job of the same key, nor any other route.
    with Client(url, api_key=KEYS["alice"]) as alice:
        other = alice.submit("other", params={"max_tokens": 2, "tokens_per_second": 0})["id"]
    assert_error(_stream_with_token(url, other, token), 401, mentions="stream token")
    assert_error(httpx.get(f"{url}/v1/jobs/{alice_job}", params={"token": token}), 401)
    assert_error(httpx.post(f"{url}/v1/jobs/{alice_job}/cancel", params={"token": token}), 401)
    assert_error(httpx.post(f"{url}/v1/jobs", params={"token": token}, json=JOB), 401)


def test_tampered_and_expired_stream_tokens_are_refused(stack, alice_job):
    url = stack.url
    token = httpx.post(f"{url}/v1/jobs/{alice_job}/stream-token", headers=bearer("alice")).json()["token"]
    payload, signature = token.split(".")
    for bad in [payload + "." + signature[:-2] + "AA", payload[:-2] + "." + signature, payload, "", "x.y"]:
        assert_error(_stream_with_token(url, alice_job, bad), 401)
    # A token the gateway itself would sign, but already expired.
    settings = Settings(api_keys=key_entries())
    expired, _ = StreamTokens(token_secret(settings), ttl_s=-5).issue(alice_job, "alice")
    fresh, _ = StreamTokens(token_secret(settings), ttl_s=60).issue(alice_job, "alice")
    assert_error(_stream_with_token(url, alice_job, expired), 401, mentions="expired")
    assert _stream_with_token(url, alice_job, fresh).status_code == 200
    # A token signed for bob cannot read alice's job (ownership is checked again).
    bobs, _ = StreamTokens(token_secret(settings), ttl_s=60).issue(alice_job, "bob")
    assert_error(_stream_with_token(url, alice_job, bobs), 404)
