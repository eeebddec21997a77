"""Every refusal in one documented shape, the role check before the body, a lost database as 503.

- FastAPI's own refusals (request validation, an unparseable or non-UTF-8 body, unknown path,
  wrong method) are rendered as `{"detail": {"code", "message"}}` like the routes' `ApiError`s;
  validation errors keep FastAPI's per-field list under `detail.errors`.
- FastAPI reads a JSON body before it runs the dependencies, so a caller with the wrong role
  used to learn "invalid JSON" (422) where it should hear 401/403. When the body cannot be
  parsed, the route's role requirement (`auth.require_roles`) is checked first.
- A database that cannot be reached (connection refused, dropped database, restart, pool
  exhausted) is 503 `database_unavailable` with `Retry-After`, on every route.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api_gateway.auth import authenticate, unauthorized
from api_gateway.errors import ApiError
from db.models import Role

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S = 5

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 503: "unavailable"}


def error_response(status: int, detail: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def route_roles(request: Request) -> frozenset[Role] | None:
    """The roles the matched route allows (from its `require_roles` dependency), or None."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        node = stack.pop()
        roles = getattr(node.call, "allowed_roles", None)
        if roles:
            return roles
        stack.extend(node.dependencies)
    return None


def role_gate(request: Request) -> ApiError | None:
    """401/403 for a caller the route would refuse anyway; None when the role may call it."""
    roles = route_roles(request)
    if roles is None:
        return None
    services = request.app.state.services
    header = services.settings.api_key_header
    try:
        with services.sessions() as session:
            key = authenticate(request, session, header)
    except ApiError as exc:
        return exc
    if key is None:
        return unauthorized("missing_api_key", f"send an API key in the {header} header", header)
    if Role(key.role) not in roles:
        names = ", ".join(sorted(r.value for r in roles))
        return ApiError(403, "role_not_allowed", f"role {Role(key.role).value} may not do this (allowed: {names})")
    return None


async def _gated(request: Request) -> JSONResponse | None:
    try:
        refused = await run_in_threadpool(role_gate, request)
    except (DBAPIError, PoolTimeoutError) as exc:
        if not is_database_unavailable(exc):
            raise
        return await on_database_error(request, exc)
    if refused is None:
        return None
    return error_response(refused.status_code, refused.detail, refused.headers)


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    gated = await _gated(request)
    if gated is not None:
        return gated
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    code = "invalid_json" if any(e["type"] == "json_invalid" for e in errors) else "invalid_request"
    summary = "; ".join(f"{'.'.join(e['loc']) or 'request'}: {e['msg']}" for e in errors) or "invalid request"
    if code == "invalid_json":
        summary = "the body is not valid JSON"
    return error_response(422, {"code": code, "message": summary, "errors": errors})


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):
        return error_response(exc.status_code, exc.detail, exc.headers)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):  # FastAPI could not decode the body
        gated = await _gated(request)
        if gated is not None:
            return gated
        return error_response(422, {"code": "invalid_json", "message": "the body is not UTF-8 encoded JSON"})
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, {"code": code, "message": str(exc.detail)}, exc.headers)


def is_database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):
        raise exc
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason[0] if reason else exc)
    return error_response(
        503, {"code": "database_unavailable", "message": "the database is unreachable; retry later"},
        {"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(PoolTimeoutError, on_database_error)
