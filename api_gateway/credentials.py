"""API keys and tenants cached in-process for a few seconds (issue 10: intake at the floor).

Every signed webhook used to cost an API-key SELECT and a lazy tenant SELECT. The cache keeps a
plain snapshot of each (never an ORM object, so no session or lazy load is tied to it) for
`settings.auth_cache_ttl_s` seconds, then reads it again: a revoked key or a deactivated tenant
is refused at the latest that long after the change, in every gateway process. A TTL of 0 turns
the cache off. Unknown keys are never cached (a flood of made-up keys cannot fill the memory), and
the cache is bounded: past MAX_ENTRIES it starts over.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.accounts import hash_key
from db.models import ApiKey, Role, Tenant

MAX_ENTRIES = 10_000
T = TypeVar("T")


class NeedsDatabase(BaseException):
    """Raised by `no_database` when an answer needs a query: the caller retries off the event loop.

    A BaseException so that no `except Exception` on the way (bookkeeping) swallows it."""


def no_database() -> Session:
    """A session opener for the event loop: answer from the cache or raise NeedsDatabase."""
    raise NeedsDatabase


@dataclass(frozen=True)
class KeyGrant:
    """What a valid, active key allows: the fields `Principal` and the intake read."""

    id: uuid.UUID
    prefix: str
    role: Role
    tenant_id: uuid.UUID | None
    courses: tuple[str, ...]
    last_used_at: datetime | None


@dataclass(frozen=True)
class TenantView:
    """A tenant as the intake needs it: identity, signing secret, buckets, active flag."""

    id: uuid.UUID
    name: str
    webhook_secret: str
    allowed_buckets: tuple[str, ...]
    active: bool
    callback_url: str | None = None  # the registered callback origin (SSRF policy)


def tenant_view(tenant: Tenant) -> TenantView:
    return TenantView(tenant.id, tenant.name, tenant.webhook_secret, tuple(tenant.allowed_buckets or ()),
                      bool(tenant.active), tenant.callback_url)


def load_key(session: Session, plaintext: str) -> tuple[KeyGrant, TenantView | None] | None:
    """The active key for `plaintext` and its tenant, in one round trip; None if unknown or revoked."""
    row = session.execute(
        select(ApiKey, Tenant).outerjoin(Tenant, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(plaintext))
    ).first()
    if row is None:
        return None
    key, tenant = row
    if key.revoked_at is not None:
        return None
    if tenant is not None and not tenant.active:  # a deactivated integration reads nothing
        return None
    grant = KeyGrant(key.id, key.prefix, Role(key.role), key.tenant_id, tuple(key.courses or ()), key.last_used_at)
    return grant, (tenant_view(tenant) if tenant is not None else None)


def load_tenant(session: Session, name_or_id: str) -> TenantView | None:
    """A tenant by name or id (the `?tenant=` of an LMS that cannot send a key)."""
    clauses = [Tenant.name == name_or_id]
    try:
        clauses.append(Tenant.id == uuid.UUID(name_or_id))
    except ValueError:
        pass
    tenant = session.scalar(select(Tenant).where(or_(*clauses)))
    return tenant_view(tenant) if tenant is not None else None


class CredentialCache:
    """Thread-safe TTL cache of key grants (by key hash) and tenants (by name or id)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, object]] = {}
        self._touched: dict[uuid.UUID, float] = {}

    def _get(self, kind: str, ident: str, load: Callable[[], T | None]) -> T | None:
        if self.ttl_s <= 0:
            return load()
        now = self._clock()
        with self._lock:
            hit = self._entries.get((kind, ident))
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]  # type: ignore[return-value]
        value = load()
        with self._lock:
            if value is None:
                self._entries.pop((kind, ident), None)
            else:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[(kind, ident)] = (now, value)
        return value

    def key(self, plaintext: str, sessions: Callable[[], Session]) -> tuple[KeyGrant, TenantView | None] | None:
        """The grant for a presented key (and its tenant), from the cache or one query."""

        def load() -> tuple[KeyGrant, TenantView | None] | None:
            with sessions() as session:
                return load_key(session, plaintext)

        return self._get("key", hash_key(plaintext), load)

    def tenant(self, name_or_id: str, sessions: Callable[[], Session]) -> TenantView | None:
        def load() -> TenantView | None:
            with sessions() as session:
                return load_tenant(session, name_or_id)

        return self._get("tenant", name_or_id, load)

    def clear(self) -> None:
        """Forget every entry (as if the TTL had passed for all of them)."""
        with self._lock:
            self._entries.clear()

    def touch_pending(self, key_id: uuid.UUID, every_s: float) -> bool:
        """Whether a use of the key is due to be recorded (read-only; `touch_due` claims it)."""
        with self._lock:
            last = self._touched.get(key_id)
        return last is None or self._clock() - last >= every_s

    def touch_due(self, key_id: uuid.UUID, every_s: float) -> bool:
        """Whether this process should record a use of the key now (at most once per `every_s`)."""
        now = self._clock()
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < every_s:
                return False
            if len(self._touched) >= MAX_ENTRIES:
                self._touched.clear()
            self._touched[key_id] = now
            return True
