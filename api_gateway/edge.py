"""Input refused at the edge, before any route runs: NUL characters anywhere a string can arrive.

Postgres cannot store U+0000 in text or jsonb, so a NUL that reached a query used to surface as a
500. One pure ASGI middleware refuses it with 422 `nul_character` in the path, in the query
string (raw or percent-encoded) and in request bodies (a raw 0x00 byte, or a JSON string holding
`\\u0000`), so no route, field or future parameter needs its own check.

Bodies are buffered (up to MAX_EDGE_BODY_BYTES; over it -> 413) and replayed unchanged to the
route, so the webhook signature is still verified on the exact bytes that arrived. Raw binary
uploads pass untouched, chosen by route (`raw_body_paths`, e.g. the LTI page's recording upload),
never by the Content-Type the client declares: a client could otherwise label a JSON body
`audio/wav` and carry a NUL past the check into a route that parses JSON whatever the header says.
Those routes take no text from the body, check the media type themselves (415) and bound their
own size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_EDGE_BODY_BYTES = 1024 * 1024
"""No route takes a body near this (the webhook's own limit is 64 KiB); a cap on buffering."""

_JSON_NUL = b"\\u0000"


def route_path(scope: Scope) -> str:
    """The request path as routes see it (without a proxy's root_path prefix)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value has U+0000 in any string, key or value, at any depth."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            for k, v in node.items():
                if "\x00" in k:
                    return True
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
    return False


def body_holds_nul(body: bytes) -> bool:
    """A raw NUL byte, or a JSON document whose strings decode to one (not an escaped `\\\\u0000`)."""
    if b"\x00" in body:
        return True
    if _JSON_NUL not in body.lower():
        return False
    try:
        return holds_nul(json.loads(body))
    except ValueError:  # not JSON (or not UTF-8): the route refuses it as such
        return False


def _refusal(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps({"detail": {"code": code, "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class EdgeMiddleware:
    """Pure ASGI middleware: 422 for NUL in path, query or body; 413 past MAX_EDGE_BODY_BYTES."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int = MAX_EDGE_BODY_BYTES, raw_body_paths: Iterable[str] = ()
    ) -> None:
        """`raw_body_paths`: regular expressions (full match) for routes whose body is raw binary."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.raw_body_paths = [re.compile(p) for p in raw_body_paths]

    def takes_raw_body(self, scope: Scope) -> bool:
        path = route_path(scope)
        return any(p.fullmatch(path) for p in self.raw_body_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = None
        if "\x00" in scope.get("path", "") or b"\x00" in unquote_to_bytes(scope.get("raw_path") or b""):
            where = "the path"
        elif b"\x00" in unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" ")):
            where = "the query string"
        if where is not None:
            await self._send(send, 422, "nul_character", f"{where} contains a NUL character (U+0000)")
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") or self.takes_raw_body(scope):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                replay_first = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._send(send, 413, "body_too_large", f"the body is over {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        else:
            body = b"".join(chunks)
            if body_holds_nul(body):
                await self._send(send, 422, "nul_character", "the body contains a NUL character (U+0000)")
                return
            replay_first = {"type": "http.request", "body": body, "more_body": False}

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return replay_first
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _send(send: Send, status: int, code: str, message: str) -> None:
        start, body = _refusal(status, code, message)
        await send(start)
        await send(body)
