"""An HTTP client for callbacks that checks every address at connect time and keeps a deadline.

Why at connect time: the URL check at intake sees a host name, and a name can resolve to an
internal address later (or on every other lookup). This transport resolves the name itself,
refuses the connection if any address is private, loopback or link-local
(`fleet.callback_policy.address_refusal`), and connects to the address it checked, so no second
lookup can differ. TLS still verifies the certificate against the host name.

Why a deadline: httpx's timeouts bound each read, not the request, so a server that trickles a
byte every few seconds could hold a delivery past its lease and let a second worker post it too.
`overall_deadline(seconds)` bounds the whole request: name lookup, connect, TLS and every read and
write share one clock, and the request ends with a timeout error when it runs out.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
import time
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import httpcore
import httpx

from fleet.callback_policy import address_refusal

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("callback_deadline", default=None)
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="callback-dns")


class AddressRefused(httpcore.ConnectError):
    """The callback host resolved to an address the service must not connect to."""


@contextlib.contextmanager
def overall_deadline(seconds: float) -> Iterator[None]:
    """Every network step of requests made inside this block ends by `seconds` from now."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _bounded(timeout: float | None, exc: type[Exception]) -> float | None:
    """The smaller of the step's own timeout and what is left of the overall deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("the callback's overall deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads, writes and TLS handshake honour the overall deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks every address, then connects to a checked one (never the name again)."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback
        self._sync = httpcore.SyncBackend()

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        lookup = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = lookup.result(timeout=timeout)
        except FutureTimeout:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        addresses = self._resolve(host, port, _bounded(timeout, httpcore.ConnectTimeout))
        refusals = [r for r in (address_refusal(a, allow_loopback=self.allow_loopback) for a in addresses) if r]
        if not addresses or refusals:
            raise AddressRefused(f"refused to connect to {host}: {'; '.join(refusals) or 'no address'}")
        last: Exception | None = None
        for address in addresses:
            try:
                stream = self._sync.connect_tcp(address, port, _bounded(timeout, httpcore.ConnectTimeout),
                                                local_address, socket_options)
                return _DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        raise AddressRefused("callbacks never go to a unix socket")

    def sleep(self, seconds: float) -> None:
        self._sync.sleep(seconds)


def callback_client(*, allow_loopback: bool, timeout_s: float = 10.0) -> httpx.Client:
    """An httpx client for callbacks: guarded connections, no proxies from the environment (a
    proxy would connect for us, unchecked), no redirects (a 3xx could point anywhere)."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx builds its connection pool without a way to pass a network backend; rebuild it with
    # the same TLS context and ours (covered by tests/integration/test_delivery_fencing_ssrf.py).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=GuardedBackend(allow_loopback=allow_loopback),
    )
    return httpx.Client(transport=transport, trust_env=False, follow_redirects=False, timeout=timeout_s)


def refused_address(exc: BaseException) -> str | None:
    """The refusal message if `exc` (as httpx raises it) came from a refused address."""
    seen = exc
    while seen is not None:
        if isinstance(seen, AddressRefused):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
