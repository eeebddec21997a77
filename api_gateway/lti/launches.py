"""OIDC third-party login and the launch that completes it (LTI Core 1.3 section 5.1, IMS Security
Framework 5.1.1).

Login stores a state row (state, nonce, registration, hash of the browser's cookie) and sends the
browser to the platform. The launch must come back with that state, in the same browser (the
cookie's hash matches), before the state expires; the id_token must carry the same nonce and
validate against the same registration (so a token from another tenant's platform cannot complete
this login). Only then is the state marked used (one conditional UPDATE: a replay finds it used)
and the launch row written, in one transaction. A refused launch writes nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from api_gateway.lti import claims as c
from api_gateway.lti.errors import LaunchRefused
from api_gateway.lti.platform_keys import PlatformKeyCache
from api_gateway.lti.validation import validate_id_token
from db.lti import find_registration
from db.models import LtiLaunch, LtiLoginState, LtiRegistration, Tenant, utcnow
from fleet.settings import Settings

BROWSER_COOKIE = "apa_lti_browser"
KEPT_CLAIMS = (c.CONTEXT, c.CUSTOM, c.RESOURCE_LINK, c.AGS_ENDPOINT, c.NRPS, c.DL_SETTINGS,
               c.LAUNCH_PRESENTATION, c.TARGET_LINK_URI, "name", "given_name", "family_name")


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def launch_url(settings: Settings) -> str:
    return f"{settings.public_base_url.rstrip('/')}/lti/launch"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass
class LoginRedirect:
    url: str
    browser_id: str  # the cookie value to set (new or the browser's own)


def begin_login(session: Session, settings: Settings, params: dict[str, str], browser_id: str | None) -> LoginRedirect:
    """Validate a login initiation and return where to send the browser (the platform's auth URL)."""
    issuer, login_hint = params.get("iss"), params.get("login_hint")
    if not issuer or not login_hint:
        raise LaunchRefused("invalid_login", "a login initiation needs iss and login_hint", 400)
    target = params.get("target_link_uri") or launch_url(settings)
    base = urlsplit(settings.public_base_url)
    if urlsplit(target).netloc != base.netloc:
        raise LaunchRefused("invalid_target", f"target_link_uri {target!r} is not on this tool", 400)
    registration = find_registration(session, issuer, params.get("client_id"))
    if registration is None:
        raise LaunchRefused("unknown_registration", f"no registration for issuer {issuer!r} and this client id", 400)
    deployment = params.get("lti_deployment_id")
    if deployment and deployment not in (registration.deployment_ids or []):
        raise LaunchRefused("unknown_deployment", f"deployment {deployment!r} is not registered for this platform", 400)

    browser_id = browser_id if browser_id and len(browser_id) >= 32 else secrets.token_urlsafe(32)
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    # Housekeeping on the way: logins that never came back, launch pages long expired.
    session.execute(delete(LtiLoginState).where(LtiLoginState.expires_at < now - timedelta(hours=1)))
    session.execute(delete(LtiLaunch).where(LtiLaunch.expires_at < now - timedelta(days=1)))
    session.add(LtiLoginState(state=state, nonce=nonce, registration_id=registration.id,
                              browser_hash=sha256(browser_id), created_at=now,
                              expires_at=now + timedelta(seconds=settings.lti_state_ttl_s)))
    session.commit()
    query = {
        "scope": "openid", "response_type": "id_token", "response_mode": "form_post", "prompt": "none",
        "client_id": registration.client_id, "redirect_uri": launch_url(settings),
        "login_hint": login_hint, "state": state, "nonce": nonce,
    }
    if params.get("lti_message_hint"):
        query["lti_message_hint"] = params["lti_message_hint"]
    sep = "&" if urlsplit(registration.auth_login_url).query else "?"
    return LoginRedirect(f"{registration.auth_login_url}{sep}{urlencode(query)}", browser_id)


@dataclass
class Launched:
    launch: LtiLaunch
    token: str  # the bearer for this launch's pages; only its hash is stored


def complete_launch(
    session: Session, settings: Settings, form: dict[str, str], browser_id: str | None, keys: PlatformKeyCache
) -> Launched:
    """Validate the platform's form post (state, browser, id_token) and record the launch."""
    id_token, state = form.get("id_token"), form.get("state")
    if not id_token or not state:
        raise LaunchRefused("invalid_launch", "the launch must post id_token and state", 400)
    row = session.get(LtiLoginState, state)
    if row is None:
        raise LaunchRefused("unknown_state", "this login state is unknown: start the activity again from the course")
    if row.used_at is not None:
        raise LaunchRefused("nonce_replayed", "this launch was already used (replayed id_token or state)")
    if _aware(row.expires_at) < utcnow():
        raise LaunchRefused("state_expired", "the login took too long: start the activity again")
    if not browser_id or sha256(browser_id) != row.browser_hash:
        raise LaunchRefused("state_mismatch", "the launch came back to another browser than the login (cookie mismatch)")
    registration = session.get(LtiRegistration, row.registration_id)
    if registration is None or not registration.active:
        raise LaunchRefused("unknown_registration", "the platform registration is gone or inactive")
    tenant = session.get(Tenant, registration.tenant_id)
    if tenant is None or not tenant.active:
        raise LaunchRefused("unknown_tenant", "the tenant of this registration is not active")
    body = validate_id_token(id_token, registration, nonce=row.nonce, keys=keys, leeway_s=settings.lti_leeway_s)

    now = utcnow()
    used = session.execute(
        update(LtiLoginState).where(LtiLoginState.state == state, LtiLoginState.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)
    ).rowcount
    if used != 1:
        session.rollback()
        raise LaunchRefused("nonce_replayed", "this launch was already used (replayed id_token or state)")
    token = secrets.token_urlsafe(32)
    launch = LtiLaunch(
        token_hash=sha256(token), registration_id=registration.id, tenant_id=registration.tenant_id,
        deployment_id=body[c.DEPLOYMENT_ID], message_type=body[c.MESSAGE_TYPE], user_id=body["sub"],
        roles=list(body.get(c.ROLES) or []),
        context_id=(body.get(c.CONTEXT) or {}).get("id"),
        resource_link_id=(body.get(c.RESOURCE_LINK) or {}).get("id"),
        claims={k: body[k] for k in KEPT_CLAIMS if k in body},
        created_at=now, expires_at=now + timedelta(seconds=settings.lti_launch_ttl_s),
    )
    session.add(launch)
    session.commit()
    return Launched(launch, token)


def find_launch(session: Session, token: str) -> LtiLaunch:
    """The launch behind a page token, or LaunchRefused (unknown or expired)."""
    launch = session.query(LtiLaunch).filter(LtiLaunch.token_hash == sha256(token)).one_or_none()
    if launch is None:
        raise LaunchRefused("unknown_launch", "this page link is not valid: open the activity again from the course", 404)
    if _aware(launch.expires_at) < utcnow():
        raise LaunchRefused("launch_expired", "this page has expired: open the activity again from the course", 401)
    return launch


def is_instructor(launch: LtiLaunch) -> bool:
    return any(r in c.INSTRUCTOR_ROLES for r in launch.roles or [])


def custom(launch: LtiLaunch) -> dict[str, Any]:
    value = (launch.claims or {}).get(c.CUSTOM)
    return value if isinstance(value, dict) else {}
