"""Tenants and API keys: creation, lookup by presented key, revocation.

Keys are random 256-bit tokens shown once and stored only as SHA-256: a database leak gives no
usable key, and a plain hash is enough because the token has full entropy (no password to guess).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import ApiKey, Role, Tenant, utcnow

KEY_PREFIX = "apa_"


class AccountError(Exception):
    """A plain-language refusal (duplicate tenant, unknown key, bad scope)."""


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def create_tenant(
    session: Session,
    name: str,
    *,
    callback_url: str | None = None,
    allowed_buckets: Sequence[str] = (),
) -> Tenant:
    name = name.strip()
    if not name:
        raise AccountError("a tenant needs a name")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise AccountError(f"tenant {name!r} already exists")
    tenant = Tenant(
        name=name,
        webhook_secret=new_webhook_secret(),
        callback_url=callback_url,
        allowed_buckets=list(allowed_buckets),
    )
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise AccountError(f"tenant {name!r} already exists") from exc
    return tenant


def get_tenant(session: Session, name_or_id: str) -> Tenant:
    clauses = [Tenant.name == name_or_id]
    try:
        clauses.append(Tenant.id == uuid.UUID(name_or_id))
    except ValueError:
        pass
    tenant = session.scalar(select(Tenant).where(or_(*clauses)))
    if tenant is None:
        raise AccountError(f"no tenant {name_or_id!r}")
    return tenant


def create_api_key(
    session: Session,
    role: Role,
    *,
    name: str = "",
    tenant: Tenant | None = None,
    courses: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """Returns the stored key and the plaintext, which is never stored and cannot be shown again."""
    if role is Role.lms and tenant is None:
        raise AccountError("an lms key belongs to a tenant: pass --tenant")
    if role is Role.teacher and tenant is None:
        # Teachers read their tenant's courses only: a key without one could never read anything.
        raise AccountError("a teacher key belongs to a tenant: pass --tenant")
    if role is Role.teacher and not courses:
        raise AccountError("a teacher key needs its course scope: pass --course at least once")
    if role is not Role.teacher and courses:
        raise AccountError("only teacher keys have a course scope")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name or f"{role.value} key",
        prefix=plaintext[:12],
        key_hash=hash_key(plaintext),
        role=role,
        tenant_id=tenant.id if tenant else None,
        courses=list(courses),
    )
    session.add(key)
    session.flush()
    return key, plaintext


def find_active_key(session: Session, plaintext: str) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext)))
    if key is None or key.revoked_at is not None:
        return None
    if key.tenant is not None and not key.tenant.active:  # a deactivated integration reads nothing
        return None
    return key


def revoke_api_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    clauses = [ApiKey.prefix == key_id_or_prefix]
    try:
        clauses.append(ApiKey.id == uuid.UUID(key_id_or_prefix))
    except ValueError:
        pass
    key = session.scalar(select(ApiKey).where(or_(*clauses)))
    if key is None:
        raise AccountError(f"no API key {key_id_or_prefix!r}")
    if key.revoked_at is not None:
        raise AccountError(f"API key {key_id_or_prefix!r} is already revoked")
    key.revoked_at = utcnow()
    session.flush()
    return key
