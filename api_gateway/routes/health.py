"""`/healthz` (the process answers), `/readyz` (database and broker reachable; workers shown),
`/metrics`.

Unhealthy workers (heartbeats stale, model failed to load) make `/readyz` say `degraded` with a
200: the gateway itself can still accept and queue submissions, so it must stay in its Service;
the workers' own liveness probes (`apa-fleet worker-health`) restart them."""

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
    workers: dict[str, str] = {}
    if checks["database"] == "ok":
        try:
            from api_gateway.worker_status import worker_statuses

            with services.sessions() as session:
                for w in worker_statuses(session, services.settings):
                    workers[w.id] = f"{w.queues}: {'ok' if w.healthy else 'unhealthy'}: {w.reason}"
        except Exception as exc:  # the heartbeats are information, never a reason for a 503
            log.warning("readiness: cannot read worker heartbeats: %s", exc)
    degraded = any(": unhealthy: " in v for v in workers.values())
    status = "unavailable" if not ok else "degraded" if degraded else "ok"
    return JSONResponse({"status": status, "checks": checks, "workers": workers}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)  # the collector queries DB and broker
    return Response(body, media_type=CONTENT_TYPE_LATEST)
