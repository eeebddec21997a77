"""Browser sign-in for the teachers' pages: an API key, once, for a server-side session cookie.

Why server-side: sign-out and key revocation must end a session at once, so the cookie holds a
random token whose SHA-256 is a `ui_sessions` row, and every request re-reads the API key behind
it (revoked key or deactivated tenant -> signed out). The key itself is only ever in the POST
body of the sign-in form: never in a URL, a cookie or a page.

Cookie: HttpOnly, SameSite=Lax, Secure when served over https (the request, or the public URL), Max-Age = SESSION_TTL.
CSRF: every state-changing form carries the session's own random token (checked with a
constant-time compare) and a foreign Origin header is refused; the sign-in form, which has no
session yet, uses a double-submit token in a short-lived SameSite=Strict cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, joinedload
from starlette.requests import Request
from starlette.responses import Response

from db.accounts import find_active_key
from db.models import ApiKey, Role, UiSession, utcnow
from db.results import as_utc

COOKIE = "apa_ui_session"
LOGIN_CSRF_COOKIE = "apa_ui_login_csrf"
SESSION_TTL = timedelta(hours=8)
LOGIN_CSRF_TTL = timedelta(minutes=30)
UI_ROLES = frozenset({Role.teacher, Role.ops})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    key: ApiKey
    csrf_token: str
    expires_at: datetime


def is_https(request: Request) -> bool:
    """Served over https: the request's own scheme, or the public URL users reach (TLS at a proxy)."""
    services = getattr(request.app.state, "services", None)
    public = getattr(getattr(services, "settings", None), "public_base_url", "") or ""
    return request.url.scheme == "https" or public.startswith("https://")


def sign_in(session: Session, presented: str) -> tuple[str, UiSession] | None:
    """A new session for an active teacher/ops key; None for any other key (same answer for all)."""
    key = find_active_key(session, presented.strip())
    if key is None or Role(key.role) not in UI_ROLES:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = UiSession(token_hash=_hash(token), key_id=key.id, csrf_token=secrets.token_urlsafe(32),
                    created_at=now, expires_at=now + SESSION_TTL)
    session.add(row)
    session.execute(delete(UiSession).where(UiSession.expires_at < now))  # sweep old ones as we go
    session.commit()
    return token, row


def current(session: Session, request: Request) -> SignedIn | None:
    """The signed-in key for this request's cookie, or None (no cookie, expired, key no longer active)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    found = session.execute(
        select(UiSession, ApiKey)
        .join(ApiKey, ApiKey.id == UiSession.key_id)
        .where(UiSession.token_hash == _hash(token))
        .options(joinedload(ApiKey.tenant))  # one round trip for session, key and tenant
    ).first()
    if found is None:
        return None
    row, key = found
    if as_utc(row.expires_at) <= utcnow():  # type: ignore[operator]
        return None
    if key.revoked_at is not None or (key.tenant is not None and not key.tenant.active):
        return None
    return SignedIn(key=key, csrf_token=row.csrf_token, expires_at=as_utc(row.expires_at))  # type: ignore[arg-type]


def sign_out(session: Session, request: Request) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        session.execute(delete(UiSession).where(UiSession.token_hash == _hash(token)))
        session.commit()


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=int(SESSION_TTL.total_seconds()), path="/ui",
                        httponly=True, secure=is_https(request), samesite="lax")


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, secure=is_https(request), samesite="lax")


def login_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def set_login_csrf(response: Response, request: Request, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=int(LOGIN_CSRF_TTL.total_seconds()), path="/ui",
                        httponly=True, secure=is_https(request), samesite="strict")


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another origin (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source != "null"
    parts = urlsplit(source)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)


def tokens_match(expected: str | None, presented: str | None) -> bool:
    return bool(expected) and bool(presented) and hmac.compare_digest(str(expected), str(presented))
