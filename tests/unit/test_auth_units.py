"""API keys and stream tokens without a server: parsing, lookup, signatures, expiry."""

from __future__ import annotations

import pytest

from api.app import create_app
from api.auth import ConfigError, KeyRing, StreamTokens, hash_key, new_key, token_secret
from tokenrelay.core.settings import Settings


def test_keys_are_random_and_only_their_hashes_are_configured():
    first, second = new_key(), new_key()
    assert first != second and first.startswith("tr_") and len(first) > 40
    ring = KeyRing([f"alice:{hash_key(first)}", f"ops:{hash_key(second)}:admin"])
    assert ring.lookup(first).name == "alice" and not ring.lookup(first).admin
    assert ring.lookup(second).admin
    assert ring.lookup(first[:-1]) is None and ring.lookup("") is None and ring.lookup(hash_key(first)) is None


@pytest.mark.parametrize("entry", ["alice", f"alice:{'0' * 63}", f"al ice:{'0' * 64}", f"alice:{'0' * 64}:root",
                                   f":{'0' * 64}", f"alice:{'G' * 64}", f"alice:{'0' * 64}:admin:x"])
def test_a_malformed_key_entry_stops_the_gateway_at_start_up(entry):
    with pytest.raises(ConfigError):
        KeyRing([entry])
    with pytest.raises(ConfigError):
        create_app(Settings(api_keys=[entry]))


def test_stream_tokens_are_bound_to_one_job_and_expire():
    tokens = StreamTokens(b"secret", ttl_s=60)
    token, _ = tokens.issue("a" * 32, "alice")
    assert tokens.verify(token, "a" * 32).name == "alice"
    assert tokens.verify(token, "b" * 32) is None
    assert StreamTokens(b"other secret", ttl_s=60).verify(token, "a" * 32) is None
    expired, _ = StreamTokens(b"secret", ttl_s=-1).issue("a" * 32, "alice")
    assert tokens.verify(expired, "a" * 32) is None


def test_gateways_with_the_same_keys_agree_on_the_token_secret():
    keys = [f"alice:{hash_key('k')}"]
    assert token_secret(Settings(api_keys=keys)) == token_secret(Settings(api_keys=list(keys)))
    assert token_secret(Settings(api_keys=keys, stream_token_secret="s")) == b"s"
    assert token_secret(Settings(api_keys=keys)) != token_secret(Settings(api_keys=[f"bob:{hash_key('k')}"]))
