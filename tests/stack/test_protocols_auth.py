"""The Responses API and the AI SDK routes with API keys on: the same keys, ownership and quotas as
`/v1/jobs`, through the official `openai` SDK and plain HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from api.auth import hash_key

from ..support.http import assert_error
from ..support.processes import Stack

KEYS = {"alice": "tr_alice-protocols", "bob": "tr_bob-protocols"}
CHAT = {"id": "shared-chat-id", "model": "demo", "max_tokens": 3, "tokens_per_second": 0,
        "messages": [{"role": "user", "parts": [{"type": "text", "text": "hello"}]}]}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def stack(redis_server, stack_settings):
    settings = {**stack_settings, "key_prefix": "tokenrelay-protocols", "queue_name": "tokenrelay-protocols",
                "api_keys": ",".join(f"{name}:{hash_key(key)}" for name, key in KEYS.items()),
                "max_active_jobs_per_key": 1}
    with Stack(redis_server.url, settings, workers=1) as stack:
        yield stack


def sdk(stack, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=KEYS[name], max_retries=0)


def test_a_response_belongs_to_its_key(stack):
    with sdk(stack, "alice") as alice, sdk(stack, "bob") as bob:
        mine = alice.responses.create(model="demo", input="mine", max_output_tokens=3,
                                      extra_body={"tokens_per_second": 0})
        assert alice.responses.retrieve(mine.id).output_text == mine.output_text
        for call in (lambda: bob.responses.retrieve(mine.id), lambda: bob.responses.cancel(mine.id),
                     lambda: bob.responses.delete(mine.id), lambda: bob.responses.input_items.list(mine.id),
                     lambda: list(bob.responses.retrieve(mine.id, stream=True)),
                     lambda: bob.responses.create(model="demo", input="x", previous_response_id=mine.id)):
            with pytest.raises(openai.NotFoundError):
                call()
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="tr_wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            stranger.responses.retrieve(mine.id)


def test_quotas_apply_to_responses_as_to_jobs(stack):
    with sdk(stack, "alice") as alice:
        running = alice.responses.create(model="demo", input="long", background=True, max_output_tokens=2000,
                                         extra_body={"tokens_per_second": 20})
        try:
            with pytest.raises(openai.RateLimitError) as caught:
                alice.responses.create(model="demo", input="second", background=True)
            assert caught.value.param == "max_active_jobs_per_key"
        finally:
            assert alice.responses.cancel(running.id).status == "cancelled"


def test_a_chat_belongs_to_its_key(stack):
    assert_error(httpx.post(f"{stack.url}/ai-sdk/chat", json=CHAT), 401, mentions="API key")
    with httpx.stream("POST", f"{stack.url}/ai-sdk/chat", json=CHAT, headers=bearer("alice"), timeout=30) as response:
        assert response.status_code == 200
        assert response.read().endswith(b"data: [DONE]\n\n")
    assert httpx.get(f"{stack.url}/ai-sdk/chat/{CHAT['id']}/stream", headers=bearer("alice")).status_code == 200
    # The same chat id under another key is another chat: nothing to resume.
    assert httpx.get(f"{stack.url}/ai-sdk/chat/{CHAT['id']}/stream", headers=bearer("bob")).status_code == 204
