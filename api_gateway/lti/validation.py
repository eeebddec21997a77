"""Complete validation of an LTI 1.3 id_token (IMS Security Framework 5.1.3 and LTI Core 5.3).

joserfc verifies the RS256 signature against the platform's key and checks the registered claims
(iss, aud, exp, iat with a small leeway, nonce); the LTI-specific rules (azp, deployment, version,
message type, the resource link) follow. Every refusal names its reason.
"""

from __future__ import annotations

import json
from typing import Any

from api_gateway.lti import claims as c
from api_gateway.lti.errors import LaunchRefused
from api_gateway.lti.platform_keys import PlatformKeyCache
from db.models import LtiRegistration

ALGORITHMS = ["RS256"]
MESSAGE_TYPES = (c.RESOURCE_LINK_REQUEST, c.DEEP_LINKING_REQUEST)
_CLAIM_CODES = {"iss": "wrong_issuer", "aud": "wrong_audience", "nonce": "nonce_mismatch", "iat": "issued_in_future",
                "nbf": "not_yet_valid", "sub": "invalid_subject"}


def validate_id_token(
    token: str, registration: LtiRegistration, *, nonce: str, keys: PlatformKeyCache, leeway_s: int
) -> dict[str, Any]:
    """The id_token's claims, or LaunchRefused saying what is wrong."""
    from joserfc import (
        jwt,  # JOSE loads with the first launch, not with every gateway process
    )
    from joserfc.errors import (
        BadSignatureError,
        ClaimError,
        ExpiredTokenError,
        InvalidClaimError,
        JoseError,
        MissingClaimError,
    )
    from joserfc.jws import extract_compact

    try:
        compact = extract_compact(token.encode())
        header, unverified = compact.headers(), json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise LaunchRefused("malformed_id_token", f"the id_token is not a compact JWS: {exc}") from None
    # Before any key is fetched: a token from another platform than the one this login went to
    # (another tenant's registration, say) is refused here, and its keys are never requested.
    if not isinstance(unverified, dict) or unverified.get("iss") != registration.issuer:
        raise LaunchRefused("registration_mismatch", "the id_token comes from another platform than this login")
    if header.get("alg") not in ALGORITHMS:
        raise LaunchRefused("unsupported_alg", f"id_token algorithm {header.get('alg')!r} is not RS256")
    key = keys.key_for(registration.keyset_url, header.get("kid"))
    try:
        decoded = jwt.decode(token, key, algorithms=ALGORITHMS)
    except BadSignatureError:
        raise LaunchRefused("bad_signature", "the id_token signature does not verify with the platform's key") from None
    except JoseError as exc:
        raise LaunchRefused("malformed_id_token", f"the id_token cannot be decoded: {exc}") from None
    body = decoded.claims

    registry = jwt.JWTClaimsRegistry(
        leeway=leeway_s,
        iss={"essential": True, "value": registration.issuer},
        aud={"essential": True, "value": registration.client_id},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(body)
    except ExpiredTokenError:
        raise LaunchRefused("token_expired", "the id_token has expired") from None
    except MissingClaimError as exc:
        raise LaunchRefused("missing_claim", f"the id_token lacks {exc.claim}") from None
    except (InvalidClaimError, ClaimError) as exc:
        code = _CLAIM_CODES.get(exc.claim, "invalid_claim")
        raise LaunchRefused(code, f"the id_token's {exc.claim!r} claim is not valid for this registration") from None

    aud = body["aud"]
    audiences = [aud] if isinstance(aud, str) else list(aud)
    azp = body.get("azp")
    if (len(audiences) > 1 and azp is None) or (azp is not None and azp != registration.client_id):
        raise LaunchRefused("wrong_azp", "the id_token's azp is not this tool's client id")
    deployment = body.get(c.DEPLOYMENT_ID)
    if not deployment or deployment not in (registration.deployment_ids or []):
        raise LaunchRefused("unknown_deployment", f"deployment {deployment!r} is not registered for this platform")
    if body.get(c.VERSION) != "1.3.0":
        raise LaunchRefused("wrong_version", f"LTI version {body.get(c.VERSION)!r} is not 1.3.0")
    message_type = body.get(c.MESSAGE_TYPE)
    if message_type not in MESSAGE_TYPES:
        raise LaunchRefused("unsupported_message_type", f"message type {message_type!r} is not supported")
    if not isinstance(body.get("sub"), str) or not body["sub"]:
        raise LaunchRefused("missing_claim", "the id_token names no user (sub): anonymous launches are not supported")
    if not isinstance(body.get(c.ROLES), list):
        raise LaunchRefused("missing_claim", "the id_token lacks the roles claim")
    if message_type == c.RESOURCE_LINK_REQUEST and not (body.get(c.RESOURCE_LINK) or {}).get("id"):
        raise LaunchRefused("missing_claim", "a resource link launch needs resource_link.id")
    if message_type == c.DEEP_LINKING_REQUEST and not (body.get(c.DL_SETTINGS) or {}).get("deep_link_return_url"):
        raise LaunchRefused("missing_claim", "a deep linking request needs deep_link_return_url")
    return body
