"""Signed result callbacks to the LMS, from the outbox table.

The outbox row is written in the same transaction as the scores, so a result is never scored
without its callback queued. Each send takes a short lease on the row (a conditional UPDATE) so two
workers never post the same delivery at once. The lease is fenced: it carries a fresh token, the
request has an overall deadline well inside the lease, and the outcome is written only if the row
still holds that token; no transaction stays open across the HTTP call. Only https URLs on the
tenant's registered origin are posted to, and never to internal addresses (fleet/callback_policy.py,
workers/egress.py). The Standard Webhooks id is the delivery id, stable
across retries, so the LMS can de-duplicate. 2xx ends it; 4xx other than 408/429 stops it (the
LMS refused it for good); anything else backs off by the shared retry policy (fleet/retry.py) and
is dead-lettered once it has kept failing past the policy's window (`retry_window_exhausted`).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from db.models import Delivery, DeliveryStatus, Tenant, utcnow
from fleet.callback_policy import CallbackRefused, check_callback_url
from workers.egress import overall_deadline, refused_address
from fleet.retry import RetryPolicy

log = logging.getLogger(__name__)

LEASE_S = 60
# The whole request (name lookup, connect, TLS, send, answer) ends well inside the lease, so no
# other worker can take the row while this one may still be posting it.
REQUEST_DEADLINE_S = 30.0
DEFAULT_POLICY = RetryPolicy(max_age_s=6 * 3600)
RETRYABLE_4XX = {408, 429}


def signed_request(secret: str, msg_id: str, payload: dict) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    now = datetime.now(timezone.utc)
    signature = Webhook(secret).sign(msg_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return body.encode(), headers


@dataclass(frozen=True)
class _Lease:
    """What one send needs, read under the lease and detached from the session."""

    token: uuid.UUID
    attempts: int
    url: str
    payload: dict
    tenant_active: bool
    secret: str
    registered_url: str | None
    created_at: datetime


def _lease(session: Session, delivery_id: uuid.UUID) -> _Lease | None:
    """Take the row for LEASE_S with a fresh fencing token, counting the attempt in the same
    statement (`attempts + 1` in SQL, never read-modify-write); the transaction ends before any
    HTTP, so no row lock or snapshot is held while the LMS answers."""
    now = utcnow()
    token = uuid.uuid4()
    res = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.pending, Delivery.next_attempt_at <= now)
        .values(next_attempt_at=now + timedelta(seconds=LEASE_S), lease_token=token, attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        session.commit()
        return None
    row = session.execute(
        select(Delivery.attempts, Delivery.url, Delivery.payload, Delivery.tenant_id, Delivery.created_at)
        .where(Delivery.id == delivery_id, Delivery.lease_token == token)
    ).one()
    tenant = session.execute(
        select(Tenant.active, Tenant.webhook_secret, Tenant.callback_url).where(Tenant.id == row.tenant_id)
    ).one_or_none()
    session.commit()
    return _Lease(token, row.attempts, row.url, row.payload, bool(tenant and tenant.active),
                  tenant.webhook_secret if tenant else "", tenant.callback_url if tenant else None, row.created_at)


def _finish(session: Session, delivery_id: uuid.UUID, token: uuid.UUID, **values) -> bool:
    """Record the outcome only while this lease still holds the row (the fencing check)."""
    res = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.lease_token == token, Delivery.status == DeliveryStatus.pending)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if res.rowcount != 1:
        log.warning("delivery %s: lease lost before its outcome was recorded; the holder's result stands", delivery_id)
        return False
    return True


def deliver(session: Session, delivery_id: uuid.UUID, http: httpx.Client, *,
            allow_loopback_http: bool = False, policy: RetryPolicy = DEFAULT_POLICY) -> float | None:
    """Try one delivery; returns seconds until the next try, or None when it is finished (or not ours).

    `http` should come from `workers.egress.callback_client`, whose connections refuse internal
    addresses and honour the overall deadline set here. `attempts` counts the row's tries (each lease adds one);
    `created_at` starts its retry window."""
    lease = _lease(session, delivery_id)
    if lease is None:
        return None
    if not lease.tenant_active:
        if _finish(session, delivery_id, lease.token, status=DeliveryStatus.failed,
                   last_error="the tenant no longer exists or is inactive"):
            log.error("callback %s FAILED for good: the tenant no longer exists or is inactive", delivery_id)
        return None
    try:
        check_callback_url(lease.url, lease.registered_url, allow_loopback_http=allow_loopback_http)
    except CallbackRefused as exc:  # retrying cannot help
        if _finish(session, delivery_id, lease.token, status=DeliveryStatus.failed, last_error=f"bad callback URL: {exc}"):
            log.error("callback %s to %s FAILED for good: bad callback URL: %s", delivery_id, lease.url, exc)
        return None
    body, headers = signed_request(lease.secret, str(delivery_id), lease.payload)
    status_code: int | None = None
    try:
        with overall_deadline(REQUEST_DEADLINE_S):
            response = http.post(lease.url, content=body, headers=headers, timeout=10.0)
        status_code = response.status_code
        error = None if response.is_success else f"HTTP {status_code}: {response.text[:200]}"
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # retrying cannot help
        _finish(session, delivery_id, lease.token, status=DeliveryStatus.failed, last_error=f"bad callback URL: {exc}")
        return None
    except Exception as exc:  # network faults and anything else: recorded, retried with backoff
        refused = refused_address(exc)
        if refused is not None:  # the host resolves to an internal address: never posted to
            _finish(session, delivery_id, lease.token, status=DeliveryStatus.failed,
                    last_error=f"bad callback URL: {refused}")
            return None
        error = f"{type(exc).__name__}: {exc}"
    values: dict = {"last_status_code": status_code, "last_error": error}
    retry_in: float | None = None
    if error is None:
        values.update(status=DeliveryStatus.delivered, delivered_at=utcnow())
    elif status_code is not None and 400 <= status_code < 500 and status_code not in RETRYABLE_4XX:
        values["status"] = DeliveryStatus.failed
    else:
        decision = policy.after_failure(lease.attempts - 1, lease.created_at, utcnow())
        if decision.give_up:
            values.update(status=DeliveryStatus.failed, last_error=f"{decision.message}; last: {error}")
        else:
            retry_in = decision.delay_s
            values["next_attempt_at"] = decision.next_attempt_at
    if not _finish(session, delivery_id, lease.token, **values):
        return None
    _log_outcome(delivery_id, lease, values, retry_in)
    return retry_in


def _log_outcome(delivery_id: uuid.UUID, lease: _Lease, values: dict, retry_in: float | None) -> None:
    """One line per try that says what happened: Celery's own line only says the task ran."""
    if values.get("status") is DeliveryStatus.delivered:
        log.info("callback %s delivered to %s (attempt %d)", delivery_id, lease.url, lease.attempts)
    elif retry_in is not None:
        log.warning("callback %s to %s FAILED (attempt %d): %s; next try in %.0f s",
                    delivery_id, lease.url, lease.attempts, values.get("last_error"), retry_in)
    else:
        log.error("callback %s to %s FAILED for good after %d attempts: %s",
                  delivery_id, lease.url, lease.attempts, values.get("last_error"))


def outcome_line(session: Session, delivery_id: uuid.UUID, retry_in: float | None) -> str:
    """What the deliver task returns, so Celery's "Task ... succeeded: <value>" line (the task ran)
    also says whether the callback itself failed."""
    row = session.get(Delivery, delivery_id)
    if row is None:
        return "callback row gone"
    if row.status is DeliveryStatus.delivered:
        return f"callback delivered (attempt {row.attempts})"
    if row.status is DeliveryStatus.failed:
        return f"callback FAILED for good after {row.attempts} attempts: {row.last_error}"
    if retry_in is not None:
        return f"callback FAILED (attempt {row.attempts}): {row.last_error}; next try in {retry_in:.0f} s"
    return "callback not due yet or held by another worker: nothing sent"


def due_deliveries(session: Session, limit: int = 100) -> list[uuid.UUID]:
    return list(session.scalars(
        select(Delivery.id)
        .where(Delivery.status == DeliveryStatus.pending, Delivery.next_attempt_at <= utcnow())
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    ))
