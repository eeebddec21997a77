"""One run of a job at a time: a Postgres session-level advisory lock held on its own connection.

The lock dies with the process, which is also how the sweep tells a crashed `running` job (lock
free) from a live one. SQLite (embedded mode) has one training process and needs no lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError


def _lock_key(job_id: uuid.UUID) -> int:
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)


class JobLease:
    """The right to run one job. Truthy when held. `check()` raises OperationalError once the
    connection that holds the Postgres advisory lock is gone (failover, idle timeout): the lock
    went with it and another worker may already run the job, so this run must stop (the job stays
    `running` and is resumed from its checkpoint by whoever holds the lock)."""

    def __init__(self, held: bool, conn=None) -> None:
        self.held = held
        self._conn = conn

    def __bool__(self) -> bool:
        return self.held

    def check(self) -> None:
        if self._conn is not None:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()


@contextmanager
def job_lock(engine: Engine, job_id: uuid.UUID) -> Iterator[JobLease]:
    """Yields a held lease when this process may run the job (Postgres advisory lock; always
    held elsewhere: the embedded SQLite mode runs one training process)."""
    if engine.dialect.name != "postgresql":
        yield JobLease(True)
        return
    key = _lock_key(job_id)
    conn = engine.connect()
    got = False
    try:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        yield JobLease(got, conn if got else None)
    finally:
        try:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        except SQLAlchemyError:  # the connection died: the lock died with it
            conn.invalidate()
        finally:
            conn.close()


def lock_is_free(engine: Engine, job_id: uuid.UUID) -> bool:
    """True when no live process runs this job (Postgres). SQLite cannot tell, so it answers False."""
    if engine.dialect.name != "postgresql":
        return False
    with job_lock(engine, job_id) as lease:
        return lease.held
