"""What the routes depend on, injected through FastAPI's `Depends`.

`create_app` builds one `Services` (settings, session factory, object store, Celery app) and
keeps it on `app.state`; the dependencies below hand its parts to the routes, so tests can
override any of them with `app.dependency_overrides` or by passing their own to `create_app`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api_gateway.credentials import CredentialCache
from fleet.settings import Settings
from fleet.storage import ObjectStore


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    celery: Celery
    owned_engine: Engine | None = field(default=None, repr=False)  # disposed at shutdown
    credentials: CredentialCache = field(default_factory=lambda: CredentialCache(5.0))

    def close(self) -> None:
        if self.owned_engine is not None:
            self.owned_engine.dispose()
        try:
            self.celery.close()
        except Exception:  # pragma: no cover - best effort at shutdown
            pass


async def get_services(request: Request) -> Services:
    """Async, like the three below: a plain `def` dependency costs a thread-pool hop per request."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_store(services: ServicesDep) -> ObjectStore:
    return services.store


async def get_celery(services: ServicesDep) -> Celery:
    return services.celery


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) when the request ends."""
    session = services.sessions()
    try:
        yield session
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
SessionDep = Annotated[Session, Depends(get_session)]
