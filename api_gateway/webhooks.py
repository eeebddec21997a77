"""Standard Webhooks verification of an LMS delivery, on the raw body, before any parsing.

Headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, several space-separated allowed for secret rotation). The timestamp
must lie within the tolerance (settings.webhook_tolerance_s; the `standardwebhooks` library
itself also caps it at 5 minutes), and the HMAC is compared in constant time by the library.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MAX_WEBHOOK_ID = 200  # the submissions.webhook_id column


class WebhookError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def verify_webhook(
    secret: str, body: bytes, headers: Mapping[str, str], *, tolerance_s: int = 300, now: float | None = None
) -> str:
    """Returns the webhook id of a delivery whose signature holds; raises WebhookError otherwise."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    missing = [n for n, v in (("webhook-id", msg_id), ("webhook-timestamp", timestamp),
                              ("webhook-signature", signature)) if not v]
    if missing:
        raise WebhookError("missing_signature", f"missing Standard Webhooks header(s): {', '.join(missing)}")
    assert msg_id is not None and timestamp is not None and signature is not None
    if len(msg_id) > MAX_WEBHOOK_ID:
        raise WebhookError("bad_webhook_id", f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookError("bad_timestamp", "webhook-timestamp must be integer seconds since the epoch") from None
    skew = (time.time() if now is None else now) - sent
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "far in the future"
        raise WebhookError(
            "stale_timestamp",
            f"webhook-timestamp is {abs(int(skew))} s {when}; the tolerance is {tolerance_s} s",
        )
    try:
        Webhook(secret).verify(
            body,
            {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature},
            json_parse=False,
        )
    except WebhookVerificationError as exc:
        reason = str(exc)
        if "timestamp" in reason.lower():
            raise WebhookError("stale_timestamp", f"webhook-timestamp rejected: {reason}") from None
        raise WebhookError("bad_signature", "the webhook signature does not match the body") from None
    except (ValueError, UnicodeDecodeError, TypeError):  # malformed signature list, non-UTF-8 body
        raise WebhookError("bad_signature", "the webhook signature is malformed or the body is not UTF-8") from None
    return msg_id
