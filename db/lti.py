"""LTI 1.3 records shared by the gateway, the delivery workers and the CLI: the tool's signing keys
and the platform registrations.

The tool has ONE key set for every tenant (platforms fetch it from `/lti/jwks`). The newest active
key signs; `rotate_tool_key` adds a new one and retires the old, which stays published for
`RETIRED_KEY_GRACE` so a platform that cached the set keeps verifying messages signed just before
the rotation. The JOSE work (key generation, JWK export) is joserfc's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import LtiRegistration, LtiToolKey, Tenant, utcnow

RETIRED_KEY_GRACE = timedelta(days=7)
SIGNING_ALG = "RS256"


class LtiConfigError(ValueError):
    """A registration that cannot be stored as given (message says which field)."""


def _new_key() -> LtiToolKey:
    from joserfc.jwk import (
        RSAKey,  # JOSE loads with LTI work, not with every gateway process
    )

    key = RSAKey.generate_key(2048, parameters={"alg": SIGNING_ALG, "use": "sig"}, auto_kid=True)
    return LtiToolKey(kid=key.kid, private_jwk=key.as_dict(private=True), public_jwk=key.as_dict(private=False))


def signing_key(session: Session, *, create: bool = True) -> LtiToolKey:
    """The newest active tool key (one is generated and committed the first time it is needed)."""
    row = session.scalar(
        select(LtiToolKey).where(LtiToolKey.active.is_(True)).order_by(LtiToolKey.created_at.desc()).limit(1)
    )
    if row is None:
        if not create:
            raise LookupError("the LTI tool has no signing key yet: run `apa-fleet lti rotate-key`")
        row = _new_key()
        session.add(row)
        session.commit()
    return row


def rotate_tool_key(session: Session) -> LtiToolKey:
    """A new signing key; the previous active ones are retired but stay published for a grace period."""
    now = utcnow()
    for old in session.scalars(select(LtiToolKey).where(LtiToolKey.active.is_(True))):
        old.active = False
        old.retired_at = now
    row = _new_key()
    session.add(row)
    session.commit()
    return row


def published_keys(session: Session) -> list[dict[str, Any]]:
    """Public JWKs to serve: active keys and those retired within the grace period."""
    cutoff = utcnow() - RETIRED_KEY_GRACE
    rows = session.scalars(select(LtiToolKey).order_by(LtiToolKey.created_at.desc())).all()
    out = []
    for row in rows:
        retired = row.retired_at
        if retired is not None and retired.tzinfo is None:  # SQLite returns naive UTC
            retired = retired.replace(tzinfo=cutoff.tzinfo)
        if row.active or (retired is not None and retired > cutoff):
            out.append({**row.public_jwk, "alg": SIGNING_ALG, "use": "sig", "kid": row.kid})
    return out


def private_key(row: LtiToolKey) -> RSAKey:
    from joserfc.jwk import RSAKey

    return RSAKey.import_key(row.private_jwk)


def _check_url(field: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LtiConfigError(f"{field}: not an http(s) URL: {value!r}")
    return value


def register_platform(
    session: Session,
    tenant: Tenant,
    *,
    issuer: str,
    client_id: str,
    deployment_ids: list[str],
    auth_login_url: str,
    auth_token_url: str,
    keyset_url: str,
) -> tuple[LtiRegistration, bool]:
    """Store (or update) the registration of `issuer` + `client_id` for `tenant`.

    Deployment ids are added to an existing registration. A registration already owned by another
    tenant is refused: the same platform client must not launch into two tenants' data.
    Returns (registration, created).
    """
    if not issuer or not client_id:
        raise LtiConfigError("issuer and client_id are required")
    if not deployment_ids or any(not d for d in deployment_ids):
        raise LtiConfigError("at least one non-empty deployment id is required")
    urls = {
        "auth_login_url": _check_url("auth_login_url", auth_login_url),
        "auth_token_url": _check_url("auth_token_url", auth_token_url),
        "keyset_url": _check_url("keyset_url", keyset_url),
    }
    row = session.scalar(
        select(LtiRegistration).where(LtiRegistration.issuer == issuer, LtiRegistration.client_id == client_id)
    )
    if row is not None and row.tenant_id != tenant.id:
        raise LtiConfigError(f"{issuer} / {client_id} is already registered for another tenant")
    created = row is None
    if row is None:
        row = LtiRegistration(tenant_id=tenant.id, issuer=issuer, client_id=client_id, deployment_ids=[], **urls)
        session.add(row)
    else:
        for name, value in urls.items():
            setattr(row, name, value)
        row.active = True
    row.deployment_ids = sorted(set(row.deployment_ids or []) | set(deployment_ids))
    session.commit()
    return row, created


def find_registration(session: Session, issuer: str, client_id: str | None) -> LtiRegistration | None:
    """The active registration for a platform; without a client id only when the issuer has one."""
    q = select(LtiRegistration).where(LtiRegistration.issuer == issuer, LtiRegistration.active.is_(True))
    if client_id:
        return session.scalar(q.where(LtiRegistration.client_id == client_id))
    rows = session.scalars(q.limit(2)).all()
    return rows[0] if len(rows) == 1 else None


def registration_out(row: LtiRegistration) -> dict[str, Any]:
    return {
        "id": str(row.id), "tenant_id": str(row.tenant_id), "issuer": row.issuer, "client_id": row.client_id,
        "deployment_ids": list(row.deployment_ids or []), "auth_login_url": row.auth_login_url,
        "auth_token_url": row.auth_token_url, "keyset_url": row.keyset_url, "active": row.active,
    }


def registration_by_id(session: Session, registration_id: uuid.UUID) -> LtiRegistration | None:
    return session.get(LtiRegistration, registration_id)
