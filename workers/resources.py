"""Per-process resources, created lazily after fork (a forked child must not reuse the parent's
database connections or model)."""

from __future__ import annotations

import os

from sqlalchemy.orm import Session, sessionmaker

from fleet.settings import Settings, get_settings
from fleet.storage import ObjectStore


class _PerProcess:
    def __init__(self) -> None:
        self.pid = -1
        self.cache: dict[str, object] = {}

    def get(self, name: str, factory):
        if self.pid != os.getpid():
            self.cache.clear()
            self.pid = os.getpid()
        if name not in self.cache:
            self.cache[name] = factory()
        return self.cache[name]


_resources = _PerProcess()


def settings() -> Settings:
    return get_settings()


def sessions() -> sessionmaker[Session]:
    from db.engine import make_engine, make_session_factory

    return _resources.get("sessions", lambda: make_session_factory(make_engine(settings().effective_database_url)))


def store() -> ObjectStore:
    return _resources.get("store", lambda: ObjectStore.from_settings(settings()))


def model_pool():
    """The scoring model of this process (loaded on first use; see workers/model_pool.py)."""
    from workers.model_pool import ModelPool

    return _resources.get("model_pool", lambda: ModelPool(settings(), sessions(), store()))
