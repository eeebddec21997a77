"""The signed deep-linking response (LTI Deep Linking 2.0 section 4.2): one LtiResourceLink for a
"read aloud" activity, carrying its reference text as custom parameters and a line item with score
maximum 100 so the platform creates the gradebook column. Signed by the tool's current key (joserfc)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

from sqlalchemy.orm import Session

from api_gateway.lti import claims as c
from db.lti import SIGNING_ALG, private_key, signing_key
from db.models import LtiLaunch, LtiRegistration

SCORE_MAXIMUM = 100


def resource_link_item(
    *, title: str, launch_url: str, reference_text: str, reference_phones: list[list[str]] | None
) -> dict[str, Any]:
    custom = {"reference_text": reference_text}
    if reference_phones is not None:
        custom["reference_phones"] = json.dumps(reference_phones)  # custom values are strings
    return {
        "type": "ltiResourceLink",
        "title": title,
        "url": launch_url,
        "custom": custom,
        "lineItem": {"scoreMaximum": SCORE_MAXIMUM, "label": title, "resourceId": f"apa-{uuid.uuid4().hex[:12]}"},
    }


def deep_linking_response(
    session: Session, launch: LtiLaunch, registration: LtiRegistration, items: list[dict[str, Any]]
) -> tuple[str, str]:
    """(return URL, signed JWT) to post back to the platform."""
    settings = (launch.claims or {}).get(c.DL_SETTINGS) or {}
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": registration.client_id,
        "aud": [registration.issuer],
        "iat": now,
        "exp": now + 600,
        "nonce": secrets.token_urlsafe(16),
        c.DEPLOYMENT_ID: launch.deployment_id,
        c.MESSAGE_TYPE: c.DEEP_LINKING_RESPONSE,
        c.VERSION: "1.3.0",
        c.DL_CONTENT_ITEMS: items,
    }
    if settings.get("data") is not None:
        body[c.DL_DATA] = settings["data"]
    key_row = signing_key(session)
    from joserfc import jwt  # JOSE loads with LTI work, not with every gateway process

    token = jwt.encode({"alg": SIGNING_ALG, "kid": key_row.kid}, body, private_key(key_row), algorithms=[SIGNING_ALG])
    return settings["deep_link_return_url"], token
