"""`Idempotency-Key` on submits: the first request with a key makes the job; a repeat with the same
body gets that same job; the same key with another body is a 422.

Keys are scoped to the API key that sends them and kept as long as the job (retention). The
stored value is `<job id> <digest of the request>`, in one key per (API key, Idempotency-Key):
one Cluster slot, and the client's string is hashed before it names a key.
"""

from __future__ import annotations

import hashlib
import json
import re

from tokenrelay.errors import IdempotencyKeyReused, InvalidRequest

HEADER = "Idempotency-Key"
VALID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces, as Stripe and the IETF draft allow


def check(value: str | None) -> str | None:
    if value is None:
        return None
    if not VALID.fullmatch(value):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
                             param=HEADER)
    return value


def digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _ttl_s(state) -> int:
    return int(state.settings.retention_s + state.settings.job_timeout_s)


def held(raw: bytes | None, body_digest: str) -> str | None:
    if raw is None:
        return None
    job_id, _, held_digest = raw.decode().partition(" ")
    if held_digest != body_digest:
        raise IdempotencyKeyReused()
    return job_id


def entry(state, principal, key: str, body_digest: str, job_id: str) -> tuple[str, str]:
    """The key's name and the value that claims it for `job_id` (what claim() sets; submit.lua too)."""
    return state.keys.idempotency(principal.name, key), f"{job_id} {body_digest}"


async def lookup(state, principal, key: str, body_digest: str) -> str | None:
    """The job this key already made (None if none); IdempotencyKeyReused for another body."""
    return held(await state.redis.get(state.keys.idempotency(principal.name, key)), body_digest)


async def claim(state, principal, key: str, body_digest: str, job_id: str) -> str | None:
    """Take the key for `job_id`: None when taken, else the job another request made with it."""
    name, value = entry(state, principal, key, body_digest, job_id)
    if await state.redis.set(name, value, nx=True, ex=_ttl_s(state)):
        return None
    return held(await state.redis.get(name), body_digest) or await claim(state, principal, key, body_digest, job_id)


async def release(state, principal, key: str, job_id: str) -> None:
    """Free the key of a submit that was refused, so a retry with it can go through."""
    name = state.keys.idempotency(principal.name, key)
    raw = await state.redis.get(name)
    if raw is not None and raw.decode().startswith(job_id + " "):
        await state.redis.delete(name)
