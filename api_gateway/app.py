"""The FastAPI application factory.

`create_app(settings)` wires the dependencies (SQLAlchemy session factory, object store, Celery
app for publishing by task name) once and includes one router per area. Nothing here imports
torch or transformers: the gateway stays small and starts fast. OpenAPI UI at `/docs` (local assets, api_gateway/docs.py).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from celery import Celery
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from sqlalchemy.orm import Session, sessionmaker

from api_gateway.admission import AdmissionMiddleware
from api_gateway.contract import document_refusals
from api_gateway.credentials import CredentialCache
from api_gateway.deps import Services
from api_gateway.edge import EdgeMiddleware
from api_gateway.error_handlers import install_error_handlers
from api_gateway.docs import install_docs
from api_gateway.metrics import GatewayMetrics, MetricsMiddleware
from api_gateway import ui
from api_gateway.routes import courses, health, learners, submissions, training
from fleet.settings import Settings, get_settings
from fleet.storage import ObjectStore

API_KEY_SCHEME = "ApiKey"


def build_services(
    settings: Settings,
    *,
    sessions: sessionmaker[Session] | None = None,
    store: ObjectStore | None = None,
    celery: Celery | None = None,
) -> Services:
    owned = None
    if sessions is None:
        from db.engine import make_engine, make_session_factory

        owned = make_engine(
            settings.effective_database_url, pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow, pool_timeout_s=settings.db_pool_timeout_s,
        )
        sessions = make_session_factory(owned)
    if store is None:
        store = ObjectStore.from_settings(settings)
    if celery is None:
        from fleet.queue import make_celery

        celery = make_celery(settings)
    return Services(settings=settings, sessions=sessions, store=store, celery=celery, owned_engine=owned,
                    credentials=CredentialCache(settings.auth_cache_ttl_s))


def warm_lexicon() -> None:
    """Load the compact CMUdict word index (about 1 MB; the gateway never holds the phones)."""
    from pronunciation.lexicon import is_known_word

    is_known_word("hello")


_frozen = False


def freeze_startup_objects() -> None:
    """Move what startup loaded (modules, CMUdict's index, templates, the ORM's mappers) out of the
    garbage collector's generations, once per process: it lives as long as the process, and every
    full collection that a request happens to trigger would otherwise walk all of it again. Measured
    on the teachers' course page, where a recomputation allocates enough to trigger them: see the
    README's benchmark section. Once, not per app: a test process builds many apps."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def create_app(
    settings: Settings | None = None,
    *,
    sessions: sessionmaker[Session] | None = None,
    store: ObjectStore | None = None,
    celery: Celery | None = None,
) -> FastAPI:
    """The gateway. Pass `sessions`, `store` or `celery` to reuse ones you already hold (tests)."""
    settings = settings or get_settings()
    services = build_services(settings, sessions=sessions, store=store, celery=celery)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Index CMUdict's words before the first request instead of during it (a third of a second).
        await run_in_threadpool(warm_lexicon)
        if settings.storage_backend == "s3":
            # Build the boto3 client once here: concurrent first requests would otherwise each
            # create it, and boto3's default session is not thread-safe.
            await run_in_threadpool(lambda: services.store.s3)
        freeze_startup_objects()
        yield
        services.close()

    app = FastAPI(
        title="apa-fleet gateway",
        version="0.1.0",
        summary="Pronunciation assessment for learning platforms: signed submissions in, scores out.",
        lifespan=lifespan,
        docs_url=None,  # served by api_gateway.docs from local files (works offline)
        redoc_url=None,
    )
    app.state.services = services
    app.state.metrics = GatewayMetrics(services)
    from api_gateway.lti import ops_routes as lti_ops, routes as lti_routes

    # inside MetricsMiddleware (added after it), so refusals are counted
    app.add_middleware(EdgeMiddleware, raw_body_paths=lti_routes.RAW_BODY_PATHS)
    # Before the edge buffers a body: an overloaded process refuses without reading it (issue 10).
    app.add_middleware(AdmissionMiddleware, max_inflight=settings.gateway_max_inflight)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)

    app.include_router(health.router)
    app.include_router(submissions.router)
    app.include_router(learners.router)
    app.include_router(courses.router)
    app.include_router(training.router)
    install_docs(app)
    ui.mount(app)  # teachers' pages under /ui (api_gateway/ui)
    app.include_router(lti_routes.router)
    app.include_router(lti_ops.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[API_KEY_SCHEME] = {
                "type": "apiKey", "in": "header", "name": settings.api_key_header,
            }
            for path, ops in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for op in ops.values():
                        op["security"] = [{API_KEY_SCHEME: []}]
            app.openapi_schema = document_refusals(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
