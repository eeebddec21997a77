"""Engine and session factory; one place that knows SQLite needs pragmas and Postgres a pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
    ping_idle_after_s: float | None = None,
) -> Engine:
    """An engine for `url`; the pool arguments apply to Postgres (the gateway passes its settings)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # several processes share the file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout_s
    )
    ping_when_idle(engine, PING_IDLE_AFTER_S if ping_idle_after_s is None else ping_idle_after_s)
    return engine


PING_IDLE_AFTER_S = 30.0
"""A pooled connection unused this long is pinged at checkout; a busier one is trusted (issue 10:
a ping on every checkout was one of six round trips per webhook). A connection that died while in
recent use fails its statement instead; SQLAlchemy then invalidates the pool, so one request sees
the fault (503 at the gateway) and the next ones get fresh connections."""


def ping_when_idle(engine: Engine, idle_after_s: float) -> None:
    """Pessimistic disconnect handling, but only for connections idle longer than `idle_after_s`."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn, record) -> None:
        record.info["apa_returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy) -> None:
        returned = record.info.get("apa_returned_at")
        if returned is None or time.monotonic() - returned < idle_after_s:
            return
        try:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1")
            cur.close()
        except Exception as exc:  # the pool discards this connection and checks out another
            raise DisconnectionError(f"pooled connection died while idle: {exc}") from exc


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
