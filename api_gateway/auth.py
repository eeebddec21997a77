"""API-key authentication and role/tenant/course scoping for the read routes.

A key arrives in the `X-API-Key` header (`settings.api_key_header`) and is looked up by hash.
Missing, unknown or revoked -> 401. Roles:
  lms      its own tenant's submissions, learners and courses;
  teacher  its tenant's submissions in the courses of its scope (a course outside it -> 403);
  ops      everything, optionally narrowed with `?tenant_id=`.
A submission outside the caller's scope answers 404, the same as one that does not exist.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from api_gateway.credentials import (
    CredentialCache,
    KeyGrant,
    NeedsDatabase,
    TenantView,
    no_database,
)
from api_gateway.deps import ServicesDep, SettingsDep
from api_gateway.errors import ApiError
from db.models import ApiKey, Role, Submission, utcnow
from db.results import as_utc

log = logging.getLogger(__name__)
SessionOpener = Callable[[], AbstractContextManager[Session]]

TOUCH_EVERY = timedelta(minutes=1)


def unauthorized(code: str, message: str, header: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": f'ApiKey header="{header}"'})


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    role: Role
    tenant_id: uuid.UUID | None
    courses: tuple[str, ...]

    @classmethod
    def of(cls, key: KeyGrant) -> Principal:
        return cls(key.id, Role(key.role), key.tenant_id, tuple(key.courses or ()))

    def can_see(self, sub: Submission) -> bool:
        if self.role is Role.ops:
            return True
        if self.tenant_id is None or sub.tenant_id != self.tenant_id:
            return False
        return self.role is Role.lms or sub.course_id in self.courses

    def scope(
        self, *, tenant_id: uuid.UUID | None = None, course_id: str | None = None
    ) -> tuple[uuid.UUID | None, tuple[str, ...] | None]:
        """(tenant filter, course scope) for a list query, or 403 for a request outside the scope."""
        if self.role is Role.ops:
            return tenant_id, None
        if self.tenant_id is None:
            raise ApiError(403, "no_tenant", "this key belongs to no tenant")
        if tenant_id is not None and tenant_id != self.tenant_id:
            raise ApiError(403, "tenant_not_allowed", "this key may only read its own tenant")
        if self.role is Role.teacher:
            if course_id is not None and course_id not in self.courses:
                raise ApiError(403, "course_not_in_scope", f"course {course_id!r} is not in this key's scope")
            return self.tenant_id, self.courses
        return self.tenant_id, None


def touch_key(open_session: SessionOpener, grant: KeyGrant, credentials: CredentialCache) -> None:
    """Record use at most once a minute per process: one conditional UPDATE, skipped on most requests."""
    now = utcnow()
    last = as_utc(grant.last_used_at)
    if last is not None and now - last < TOUCH_EVERY:
        return
    if not credentials.touch_pending(grant.id, TOUCH_EVERY.total_seconds()):
        return
    try:
        with open_session() as session:  # on the event loop this raises NeedsDatabase: retried in a thread
            if not credentials.touch_due(grant.id, TOUCH_EVERY.total_seconds()):
                return
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == grant.id,
                       or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_EVERY))
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
    except Exception as exc:  # bookkeeping must never fail a request
        log.warning("cannot record use of key %s: %s", grant.prefix, exc)


def authenticate_with(
    request: Request, open_session: SessionOpener, header: str
) -> tuple[KeyGrant, TenantView | None] | None:
    """The active key in the header and its tenant; None without a header; 401 when it is not valid.

    Answered from the process's credential cache when it can (issue 10); `open_session` is only
    called on a miss, so a cached key costs no database round trip at all.
    """
    presented = request.headers.get(header)
    if not presented:
        return None
    credentials: CredentialCache = request.app.state.services.credentials
    found = credentials.key(presented.strip(), open_session)
    if found is None:
        raise unauthorized("invalid_api_key", f"the {header} key is unknown or revoked", header)
    touch_key(open_session, found[0], credentials)
    return found


def authenticate(request: Request, session: Session, header: str) -> KeyGrant | None:
    """`authenticate_with` on a session the caller already holds."""
    found = authenticate_with(request, lambda: nullcontext(session), header)
    return found[0] if found is not None else None


def principal_from_session(request: Request, session: Session, settings) -> Principal:
    """`current_principal` for code already in a thread with a session (a dependency that decides
    between a key and a signed link)."""
    header = settings.api_key_header
    key = authenticate(request, session, header)
    if key is None:
        raise unauthorized("missing_api_key", f"send an API key in the {header} header", header)
    return Principal.of(key)


async def current_principal(request: Request, services: ServicesDep, settings: SettingsDep) -> Principal:
    """On the event loop when the credential cache answers (most requests: no thread-pool hop, no
    query); in a thread with its own session when it must query (a miss, the last-used stamp)."""
    header = settings.api_key_header
    try:
        found = authenticate_with(request, no_database, header)
    except NeedsDatabase:
        found = await run_in_threadpool(authenticate_with, request, services.sessions, header)
    if found is None:
        raise unauthorized("missing_api_key", f"send an API key in the {header} header", header)
    return Principal.of(found[0])


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    allowed = frozenset(roles)

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        # async: a pure check, so no thread-pool hop (a sync dependency costs one per request)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise ApiError(403, "role_not_allowed", f"role {principal.role.value} may not do this (allowed: {names})")
        return principal

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]  # read by error_handlers.role_gate
    return dependency


ReaderDep = Annotated[Principal, Depends(require_roles(Role.lms, Role.teacher, Role.ops))]
