"""One listening socket per gateway process, balanced by the kernel (SO_REUSEPORT).

uvicorn's `--workers` binds one socket in the parent and shares it; each child's event loop then
accepts every pending connection it can in one burst, so the first child awake takes nearly all
keep-alive connections and keeps them (measured: one of two processes did 80 % of the work, issue
10). With SO_REUSEPORT each child listens on its own socket and the kernel spreads new connections
across them by hash.

uvicorn's supervisor (restarts, health pings) stays: it hands each child the parent's socket list
by pickling it, and `ReusePortListener` unpickles as a new socket bound in that child.
"""

from __future__ import annotations

import logging
import socket
import sys

# uvicorn's exit code for a child that could not start: its supervisor then stops, instead of
# starting the same failing child again every half second.
from uvicorn.config import STARTUP_FAILURE

SUPPORTED = hasattr(socket, "SO_REUSEPORT")

log = logging.getLogger("uvicorn.error")


def reuse_port_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # taken since the parent checked it (by a socket without SO_REUSEPORT)
        sock.close()
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class ReusePortListener:
    """Stands for a socket in uvicorn's list: it binds nothing in the parent, a fresh socket in
    each child process it is sent to."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self):
        return reuse_port_socket, (self.host, self.port)
