"""What an LMS administrator types in to add this tool (`apa-fleet lti config`, `GET /v1/lti/config`)."""

from __future__ import annotations

SCOPES = (
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
)


def tool_config(public_base_url: str) -> dict[str, object]:
    base = public_base_url.rstrip("/")
    return {
        "title": "apa-fleet pronunciation assessment",
        "tool_url": f"{base}/lti/launch",
        "login_initiation_url": f"{base}/lti/login",
        "redirect_urls": [f"{base}/lti/launch"],
        "deep_linking_url": f"{base}/lti/launch",
        "jwks_url": f"{base}/lti/jwks",
        "scopes": list(SCOPES),
        "messages": ["LtiResourceLinkRequest", "LtiDeepLinkingRequest"],
        "custom_parameters": "none needed (deep linking sets reference_text per activity)",
        "privacy": "send the user's id; name optional (shown on the recording page)",
    }
