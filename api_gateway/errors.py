"""One error shape for every refusal: `{"detail": {"code": ..., "message": ...}}`.

FastAPI's own validation errors take the same shape (`error_handlers`), their per-field list
under `detail.errors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel


class ApiError(HTTPException):
    def __init__(
        self, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(status_code, detail={"code": code, "message": message, **extra}, headers=headers)
        self.code = code
        self.message = message


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    detail: ErrorDetail


_TEXT = {
    400: "Bad request (for example an invalid cursor)",
    401: "Missing, unknown or revoked credentials, or a bad webhook signature",
    403: "The caller's role or scope does not allow this",
    404: "No such resource in the caller's scope",
    409: "Conflicts with the stored state (for example a replayed id with different content)",
    413: "Request body too large",
    422: "Invalid input; `detail.code` says why",
    503: "A dependency (object store, database, broker) is unreachable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given status codes."""
    return {c: {"description": _TEXT.get(c, ""), "model": ErrorBody} for c in codes}
