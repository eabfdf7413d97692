"""API keys, principals and stream tokens; an ASGI middleware that authenticates every request.

Deliberate choices (read before changing):
- Keys are random strings shown once; the server keeps only their SHA-256 (a key has far more
  entropy than a password, so a plain hash is enough) and compares hashes in constant time,
  against every configured key, so timing says nothing about which key nearly matched.
- Keys are read from the Authorization header only. `?token=` is accepted on one route, a job's
  stream, and only as a signed stream token for that very job: a key there is just a bad token.
- With no keys configured there is no authentication: the CLI refuses a non-loopback host then.
- The web page (`/`, `/favicon.ico`, `/web/*`) is served without a key: it holds no data, and asks for a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenrelay.core.settings import Settings

from .errors import error_response

PUBLIC_PATHS = frozenset({"/health", "/ready", "/", "/favicon.ico"})
# The web page's own files: static, no data; the page then asks for a key and sends it as a bearer token.
PUBLIC_PREFIXES = ("/web/",)
STREAM_PATH = re.compile(r"/v1/jobs/([0-9a-f]{32})/stream")
KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ADMIN_ROLE = "admin"
KEY_PREFIX = "tr_"
STATE_FIELD = "tokenrelay_principal"


class ConfigError(ValueError):
    """Raised when an `api_keys` entry is malformed (at start-up, never per request)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (jobs are owned by it) and whether it may read every job."""

    name: str
    admin: bool = False
    job_id: str | None = None  # set when authenticated by a stream token: that job only

    def may_access(self, owner: str | None) -> bool:
        return self.admin or owner == self.name


ANONYMOUS = Principal("anonymous", admin=True)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys, as (name, role, hash); empty means authentication is off."""

    def __init__(self, entries: list[str]) -> None:
        self.entries: list[tuple[bytes, Principal]] = []
        for entry in entries:
            parts = entry.split(":")
            if len(parts) not in (2, 3) or not KEY_NAME.fullmatch(parts[0]) or \
                    not re.fullmatch(r"[0-9a-f]{64}", parts[1]) or parts[2:] not in ([], [ADMIN_ROLE]):
                raise ConfigError("each api_keys entry must be <name>:<sha256 hex>[:admin]")
            self.entries.append((parts[1].encode(), Principal(parts[0], admin=parts[2:] == [ADMIN_ROLE])))

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key).encode()
        found = None
        for stored, principal in self.entries:  # no early exit: every key costs the same
            if hmac.compare_digest(stored, digest):
                found = principal
        return found


class StreamTokens:
    """Short-lived signed tokens, `<payload>.<signature>`, each good for one job's stream."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self.secret = secret
        self.ttl_s = ttl_s

    def issue(self, job_id: str, owner: str) -> tuple[str, int]:
        expires = int(time.time()) + self.ttl_s
        payload = _b64(json.dumps({"job": job_id, "sub": owner, "exp": expires}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", expires

    def verify(self, token: str, job_id: str) -> Principal | None:
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or claims.get("job") != job_id or not isinstance(claims.get("exp"), int):
            return None
        if claims["exp"] < time.time() or not isinstance(claims.get("sub"), str):
            return None
        return Principal(claims["sub"], job_id=job_id)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_secret(settings: Settings) -> bytes:
    if settings.stream_token_secret:
        return settings.stream_token_secret.encode()
    if settings.api_keys:
        return hashlib.sha256(("tokenrelay-stream-token\n" + "\n".join(sorted(settings.api_keys))).encode()).digest()
    return secrets.token_bytes(32)  # no keys: tokens are not needed to read anything


def _unauthorized(message: str):
    return error_response(401, "authentication_error", message, param="Authorization",
                          headers={"WWW-Authenticate": "Bearer"})


def _query_token(scope: Scope) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[-1] if values else None


class Authenticate:
    """Puts a Principal in the request state, or answers 401."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, tokens: StreamTokens) -> None:
        self.app = app
        self.keyring = keyring
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal = self._authenticate(scope)
        if isinstance(principal, str):
            await _unauthorized(principal)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_FIELD] = principal
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> Principal | str | None:
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None
        if not self.keyring.enabled:
            return ANONYMOUS
        header = dict(scope["headers"]).get(b"authorization")
        if header is not None:
            scheme, _, key = header.decode("latin-1").partition(" ")
            principal = self.keyring.lookup(key.strip()) if scheme.lower() == "bearer" else None
            return principal or "invalid API key"
        stream = STREAM_PATH.fullmatch(path)
        token = _query_token(scope) if stream and scope["method"] == "GET" else None
        if token is not None:
            return self.tokens.verify(token, stream.group(1)) or "invalid or expired stream token"
        return "missing API key: send Authorization: Bearer <key>"


NOBODY = Principal("", admin=False)  # owns nothing: what a route sees if authentication did not run


def principal_of(request) -> Principal:
    return getattr(request.state, STATE_FIELD, None) or NOBODY
