"""Admission control: past its capacity a gateway process answers 503 + Retry-After at once.

Without it an overload queued requests in the thread pool and on the connection pool until they
timed out 30 s later as 500s (issue 10). Each process admits at most `settings.gateway_max_inflight`
API requests at a time; one more gets `503 overloaded` with `Retry-After` within milliseconds,
without its body being read, so the LMS retries later and the admitted requests keep their
latency. Probes (`/healthz`, `/readyz`, `/metrics`) and the docs are never refused: an orchestrator
must see an overloaded process as alive.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

RETRY_AFTER_S = 1
ADMITTED_PREFIX = "/v1/"


class AdmissionMiddleware:
    """Pure ASGI middleware: a counter of API requests in progress, refused past `max_inflight`."""

    def __init__(self, app: ASGIApp, max_inflight: int) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.inflight = 0  # one event loop per process: no lock needed
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(ADMITTED_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            self.refused += 1
            await self._refuse(send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": {
            "code": "overloaded",
            "message": f"this gateway process has {self.max_inflight} requests in progress; retry shortly",
        }}).encode()
        await send({
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(RETRY_AFTER_S).encode())],
        })
        await send({"type": "http.response.body", "body": body})
