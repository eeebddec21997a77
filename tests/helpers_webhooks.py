"""Standard Webhooks signing for tests, the demo and the end-to-end test."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from standardwebhooks import Webhook


def signed_headers(
    secret: str,
    body_bytes: bytes,
    msg_id: str | None = None,
    timestamp: datetime | float | int | None = None,
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature` (+ JSON content type) for `body_bytes`.

    `timestamp` is a datetime or epoch seconds; default now. `msg_id` defaults to a fresh id.
    """
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    if timestamp is None:
        when = datetime.now(timezone.utc)
    elif isinstance(timestamp, datetime):
        when = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=timezone.utc)
    else:
        when = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    # Webhook.sign() reads the datetime's wall time as UTC, so hand it a UTC one.
    when = when.astimezone(timezone.utc)
    signature = Webhook(secret).sign(msg_id, when, body_bytes.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def signed_json(secret: str, payload: Any, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    """The JSON body bytes and their signed headers."""
    body = json.dumps(payload).encode()
    return body, signed_headers(secret, body, **kwargs)
