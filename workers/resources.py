"""Per-process resources, created lazily after fork (a forked child must not reuse the parent's
database connections or model)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from fleet.settings import Settings, get_settings
from fleet.storage import ObjectStore


class _PerProcess:
    """Locked: the model-loading thread and the first task may ask at once, and two model pools
    would load the model twice."""

    def __init__(self) -> None:
        self.pid = -1
        self.cache: dict[str, object] = {}
        self.lock = threading.RLock()  # re-entrant: a factory asks for other resources

    def get(self, name: str, factory):
        with self.lock:
            if self.pid != os.getpid():
                self.cache.clear()
                self.pid = os.getpid()
            if name not in self.cache:
                self.cache[name] = factory()
            return self.cache[name]


_resources = _PerProcess()
# A lock held by another thread at fork time would stay held in the child forever.
os.register_at_fork(after_in_child=lambda: setattr(_resources, "lock", threading.RLock()))


def settings() -> Settings:
    return get_settings()


def sessions() -> sessionmaker[Session]:
    from db.engine import make_engine, make_session_factory

    return _resources.get("sessions", lambda: make_session_factory(make_engine(settings().effective_database_url)))


def store() -> ObjectStore:
    return _resources.get("store", lambda: ObjectStore.from_settings(settings()))


def fetcher() -> ThreadPoolExecutor:
    """Threads that fetch and decode a round's recordings at once (workers/fetch.py): one per
    batch slot, plus one for the hinted GET that starts before the claim."""
    return _resources.get("fetcher", lambda: ThreadPoolExecutor(settings().score_batch_size + 1,
                                                                thread_name_prefix="apa-fetch"))


def model_pool():
    """The scoring model of this process (loaded on first use; see workers/model_pool.py)."""
    from workers.model_pool import ModelPool

    return _resources.get("model_pool", lambda: ModelPool(settings(), sessions(), store()))
