"""Is the gateway's port free? Asked before anything starts, so a taken port costs a second, not a timeout."""

from __future__ import annotations

import errno
import socket

from fleet.checks import ConfigError


def check_port_free(host: str, port: int, *, how_to_change: str = "APA_GATEWAY_PORT") -> None:
    """Raise ConfigError naming the port and the setting to change if `host:port` cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError("APA_GATEWAY_HOST", f"cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not reported as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    how_to_change,
                    f"port {port} on {host} is already in use; set {how_to_change} to a free port "
                    f"(e.g. {how_to_change}={port + 1})",
                ) from None
            raise ConfigError(how_to_change, f"cannot bind {host}:{port}: {exc.strerror}") from None
