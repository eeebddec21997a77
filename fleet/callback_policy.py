"""Where result callbacks may go: the rule against server-side request forgery (SSRF).

A callback is a POST from inside the cluster to a URL an LMS chose, so a free choice would let a
tenant reach internal services (metadata endpoints, databases, the admin ports of the fleet). Two
checks, both here so the gateway (at intake) and the delivery worker (at send time) apply one rule:

- the URL: https only, on the origin (scheme, host, port) of the tenant's registered callback URL,
  no credentials in it; `check_callback_url`.
- the address, after DNS resolution, at connect time (a name can resolve elsewhere later): only
  public unicast addresses; `address_refusal`. The delivery worker's transport calls it for every
  address it would connect to.

`allow_loopback_http` (APA_CALLBACK_ALLOW_LOOPBACK_HTTP) admits http:// on loopback hosts and
loopback addresses, for the embedded mode and tests; private and link-local stay refused.
Standard library only: the gateway imports it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class CallbackRefused(ValueError):
    """A callback URL or address the service will not post to; the message says why."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return ip


def _is_loopback_host(host: str) -> bool:
    ip = _ip(host)
    return ip.is_loopback if ip is not None else host.lower().rstrip(".") in LOOPBACK_NAMES


def address_refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why the service must not connect to `address` (an IP literal), or None when it may.

    Only globally routable unicast addresses pass: private (10/8, 172.16/12, 192.168/16, fc00::/7),
    loopback, link-local (169.254/16 with the cloud metadata service, fe80::/10), shared (100.64/10),
    unspecified, multicast and reserved ranges are refused."""
    ip = _ip(address)
    if ip is None:
        return f"{address!r} is not an IP address"
    if ip.is_loopback:
        return None if allow_loopback else f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return f"{ip} is not a unicast address"
    if ip.is_private or not ip.is_global:
        return f"{ip} is a private address"
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"https": 443, "http": 80}.get(scheme)
    except ValueError:
        raise CallbackRefused(f"{url!r} has an invalid port") from None
    return scheme, (parts.hostname or "").rstrip("."), port


def check_callback_url(url: str, registered: str | None, *, allow_loopback_http: bool) -> str:
    """`url` if the service may post results to it, else CallbackRefused saying why.

    `registered` is the tenant's own callback URL: it fixes the one origin its callbacks go to,
    so a submission can choose a path there but never another host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must not carry credentials")
    scheme, host, _ = _origin(url)
    if scheme == "http" and not (allow_loopback_http and _is_loopback_host(host)):
        raise CallbackRefused("callback_url must be https")
    ip = _ip(host)
    if ip is not None:
        reason = address_refusal(host, allow_loopback=allow_loopback_http)
        if reason:
            raise CallbackRefused(f"callback_url points at a refused address: {reason}")
    elif _is_loopback_host(host) and not allow_loopback_http:
        raise CallbackRefused("callback_url points at this machine (localhost)")
    if not registered:
        raise CallbackRefused("this tenant has no registered callback URL; callbacks go only to its registered origin")
    if _origin(url) != _origin(registered):
        want = "{}://{}:{}".format(*_origin(registered))
        raise CallbackRefused(f"callback_url must be on the tenant's registered callback origin {want}")
    return url
