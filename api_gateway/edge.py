"""Input refused at the edge, before any route runs: NUL characters anywhere a string can arrive.

Postgres cannot store U+0000 in text or jsonb, so a NUL that reached a query used to surface as a
500. One pure ASGI middleware refuses it with 422 `nul_character` in the path, in the query
string (raw or percent-encoded) and in request bodies (a raw 0x00 byte, or a JSON string holding
`\\u0000`), so no route, field or future parameter needs its own check.

Bodies are buffered (up to MAX_EDGE_BODY_BYTES; over it -> 413) and replayed unchanged to the
route, so the webhook signature is still verified on the exact bytes that arrived. Binary
uploads (audio, octet-stream, multipart recordings from the LTI page) pass untouched: NUL bytes are
ordinary there, and those routes bound their own size and check their own text fields.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_EDGE_BODY_BYTES = 1024 * 1024
"""No route takes a body near this (the webhook's own limit is 64 KiB); a cap on buffering."""

_JSON_NUL = b"\\u0000"
_BINARY_TYPES = (b"audio/", b"video/", b"application/octet-stream", b"multipart/form-data")


def is_binary_upload(scope: Scope) -> bool:
    content_type = dict(scope.get("headers") or ()).get(b"content-type", b"").lower()
    return content_type.startswith(_BINARY_TYPES)


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

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_EDGE_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") or is_binary_upload(scope):
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
