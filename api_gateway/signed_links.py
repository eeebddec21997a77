"""Short-lived signed links: a browser can open a training report without the API key header.

A link carries `expires` (Unix seconds) and `signature` = hex HMAC-SHA256 over "<path>\n<expires>"
with the server's secret (`APA_SIGNED_LINK_SECRET`; unset, a random secret for this gateway
process, so links then work only on the replica that made them and until it restarts). The path is
part of the signed text, so a link opens exactly one resource.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode

from fleet.settings import Settings

_PROCESS_SECRET = secrets.token_bytes(32)


def link_secret(settings: Settings) -> bytes:
    """The configured secret, else this process's random one."""
    if settings.signed_link_secret is not None:
        return settings.signed_link_secret.get_secret_value().encode()
    return _PROCESS_SECRET


def signature(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(settings: Settings, path: str, *, now: float | None = None) -> str:
    """`<public base URL><path>?expires=..&signature=..`, valid for `APA_SIGNED_LINK_TTL_S`."""
    expires = int((time.time() if now is None else now) + settings.signed_link_ttl_s)
    query = urlencode({"expires": expires, "signature": signature(link_secret(settings), path, expires)})
    return f"{settings.public_base_url.rstrip('/')}{path}?{query}"


def check_link(settings: Settings, path: str, expires: int, sig: str, *, now: float | None = None) -> str | None:
    """None when the link is good; else why not ('link_expired', 'bad_signature')."""
    expected = signature(link_secret(settings), path, expires).encode()
    if not hmac.compare_digest(expected, sig.encode("utf-8", "surrogatepass")):  # any text a client sends
        return "bad_signature"
    if (time.time() if now is None else now) > expires:
        return "link_expired"
    return None
