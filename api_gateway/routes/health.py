"""`/healthz` (the process answers), `/readyz` (database and broker reachable), `/metrics`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from fleet.broker import ping_broker
from api_gateway.deps import ServicesDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check(name: str, fn) -> tuple[bool, str]:
    try:
        fn()
        return True, "ok"
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        log.warning("readiness: %s unreachable: %s", name, reason[0] if reason else type(exc).__name__)
        return False, f"unreachable: {reason[0] if reason else type(exc).__name__}"


@router.get(
    "/readyz",
    summary="Readiness: database and broker reachable",
    responses={503: {"description": "A dependency is unreachable; `checks` says which"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    def database() -> None:
        with services.sessions() as session:
            session.execute(text("SELECT 1"))

    checks: dict[str, Any] = {}
    ok = True
    for name, fn in (("database", database), ("broker", lambda: ping_broker(services.celery))):
        passed, message = _check(name, fn)
        ok &= passed
        checks[name] = message
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)  # the collector queries DB and broker
    return Response(body, media_type=CONTENT_TYPE_LATEST)
