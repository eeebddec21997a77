"""Signed result callbacks to the LMS, from the outbox table.

The outbox row is written in the same transaction as the scores, so a result is never scored
without its callback queued. Each send takes a short lease on the row (a conditional UPDATE) so two
workers never post the same delivery at once; the Standard Webhooks id is the delivery id, stable
across retries, so the LMS can de-duplicate. 2xx ends it; 4xx other than 408/429 stops it (the
LMS refused it for good); anything else backs off by the shared retry policy (fleet/retry.py) and
is dead-lettered once it has kept failing past the policy's window (`retry_window_exhausted`).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from db.models import Delivery, DeliveryStatus, Tenant, utcnow
from fleet.retry import RetryPolicy

LEASE_S = 60
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


def _lease(session: Session, delivery_id: uuid.UUID) -> bool:
    now = utcnow()
    res = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.pending, Delivery.next_attempt_at <= now)
        .values(next_attempt_at=now + timedelta(seconds=LEASE_S))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount == 1


def deliver(session: Session, delivery_id: uuid.UUID, http: httpx.Client,
            policy: RetryPolicy = DEFAULT_POLICY) -> float | None:
    """Try one delivery; returns seconds until the next try, or None when it is finished.
    `attempts` is the row's transient-failure count and `created_at` starts its retry window."""
    if not _lease(session, delivery_id):
        return None
    delivery = session.get(Delivery, delivery_id)
    tenant = session.get(Tenant, delivery.tenant_id)
    delivery.attempts += 1
    if tenant is None or not tenant.active:
        delivery.status, delivery.last_error = DeliveryStatus.failed, "the tenant no longer exists or is inactive"
        session.commit()
        return None
    body, headers = signed_request(tenant.webhook_secret, str(delivery.id), delivery.payload)
    status_code: int | None = None
    try:
        response = http.post(delivery.url, content=body, headers=headers, timeout=10.0)
        status_code = response.status_code
        error = None if response.is_success else f"HTTP {status_code}: {response.text[:200]}"
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # retrying cannot help
        delivery.status, delivery.last_error = DeliveryStatus.failed, f"bad callback URL: {exc}"
        session.commit()
        return None
    except Exception as exc:  # network faults and anything else: recorded, retried with backoff
        error = f"{type(exc).__name__}: {exc}"
    delivery.last_status_code = status_code
    delivery.last_error = error
    retry_in: float | None = None
    if error is None:
        delivery.status = DeliveryStatus.delivered
        delivery.delivered_at = utcnow()
    elif status_code is not None and 400 <= status_code < 500 and status_code not in RETRYABLE_4XX:
        delivery.status = DeliveryStatus.failed
    else:
        decision = policy.after_failure(delivery.attempts - 1, delivery.created_at, utcnow())
        if decision.give_up:
            delivery.status = DeliveryStatus.failed
            delivery.last_error = f"{decision.message}; last: {error}"
        else:
            retry_in = decision.delay_s
            delivery.next_attempt_at = decision.next_attempt_at
    session.commit()
    return retry_in


def due_deliveries(session: Session, limit: int = 100) -> list[uuid.UUID]:
    return list(session.scalars(
        select(Delivery.id)
        .where(Delivery.status == DeliveryStatus.pending, Delivery.next_attempt_at <= utcnow())
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    ))
