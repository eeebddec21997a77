"""OAuth 2 access tokens from an LTI platform (IMS Security Framework 4.1): the client-credentials
grant with a JWT client assertion signed by the tool's key (joserfc signs). Used by the AGS passback
on the delivery workers and by the NRPS roster route in the gateway (so it lives here, below both).
Tokens are cached per (token URL, client id, scopes) until 30 s before they expire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.lti import SIGNING_ALG, private_key, signing_key
from db.models import LtiRegistration

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenError(Exception):
    """The platform did not hand out an access token."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class _Token:
    value: str
    expires_at: float


class TokenCache:
    """Access tokens per (token URL, client id, scopes), reused until 30 s before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # tests read it to see the cache at work

    def get(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            tok = self._tokens.get(key)
            return tok.value if tok and tok.expires_at - 30 > time.time() else None

    def put(self, key: tuple[str, str, str], value: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[key] = _Token(value, time.time() + expires_in)
            self.fetches += 1

    def drop(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


TOKENS = TokenCache()


def client_assertion(session: Session, registration: LtiRegistration) -> str:
    """The signed JWT that authenticates the tool at the platform's token endpoint."""
    key_row = signing_key(session)
    now = int(time.time())
    claims = {"iss": registration.client_id, "sub": registration.client_id, "aud": registration.auth_token_url,
              "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    from joserfc import jwt  # JOSE loads with LTI work, not with every gateway process

    return jwt.encode({"alg": SIGNING_ALG, "kid": key_row.kid}, claims, private_key(key_row), algorithms=[SIGNING_ALG])


def access_token(session: Session, registration: LtiRegistration, http: httpx.Client, scopes: tuple[str, ...],
                 cache: TokenCache = TOKENS) -> tuple[str, tuple[str, str, str]]:
    import httpx  # the caller already holds a client; this only names its errors

    key = (registration.auth_token_url, registration.client_id, " ".join(sorted(scopes)))
    cached = cache.get(key)
    if cached:
        return cached, key
    try:
        response = http.post(registration.auth_token_url, data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(session, registration), "scope": key[2],
        }, timeout=10.0)
    except httpx.HTTPError as exc:
        raise TokenError(f"token endpoint unreachable: {type(exc).__name__}: {exc}") from exc
    if not response.is_success:
        raise TokenError(f"token endpoint answered HTTP {response.status_code}: {response.text[:200]}",
                         response.status_code)
    try:
        data = response.json()
        value, expires_in = data["access_token"], float(data.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError(f"token endpoint answered no access_token: {response.text[:200]}") from exc
    cache.put(key, value, expires_in)
    return value, key
