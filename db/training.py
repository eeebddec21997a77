"""Rows of the retraining loop that several processes create at once: annotation batches and jobs.

Both are written by the gateway (ops requests) and by the training worker (discovery beat,
threshold trigger) concurrently, so "check, then insert" is not enough. Each insert here is an
`INSERT ... ON CONFLICT DO NOTHING` against a unique key the database enforces (the batch URI;
one queued/running job per engine), followed by a read of the row that won. A loser waits for
the winner's commit (Postgres) and then sees its row; nobody gets an IntegrityError.

No torch, no object storage: the gateway imports this.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import DEFAULT_ENGINE, AnnotationBatch, JobStatus, TrainingJob, utcnow

PENDING_JOB_STATUSES = (JobStatus.queued, JobStatus.running)


def _insert_ignoring_conflicts(session: Session, table, values: dict[str, Any]):
    """INSERT that does nothing when a unique key (any) already holds the row; returns the new id or None."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only Postgres and SQLite are supported
        stmt = insert(table).values(**values)
    return session.execute(stmt.returning(table.c.id)).scalar()


def batch_key(uri: str) -> str:
    """One spelling per batch prefix, the unique key of its row: always ends with "/"."""
    return uri.rstrip("/") + "/"


def add_batch_row(session: Session, uri: str, name: str | None = None) -> tuple[AnnotationBatch, bool]:
    """The batch row for the prefix `uri` (checked by the caller), created `registered` if absent.

    Returns (row, created). The caller commits. Concurrent calls for one prefix create one row;
    the others get it back.
    """
    prefix = batch_key(uri)
    name = name or prefix.rstrip("/").rsplit("/", 1)[-1] or prefix
    new_id = _insert_ignoring_conflicts(session, AnnotationBatch.__table__, {
        "id": uuid.uuid4(), "uri": prefix, "name": name[:200], "problems": [], "created_at": utcnow(),
        "progress_at": utcnow(),
    })
    row = session.scalar(select(AnnotationBatch).where(AnnotationBatch.uri == prefix).execution_options(
        populate_existing=True))
    assert row is not None, prefix  # inserted now, or by the transaction we waited for
    return row, new_id is not None


def pending_job(session: Session, engine: str = DEFAULT_ENGINE) -> TrainingJob | None:
    """The engine's queued or running job, if any."""
    return session.scalar(select(TrainingJob).where(TrainingJob.engine == engine,
                                                    TrainingJob.status.in_(PENDING_JOB_STATUSES)))


def add_job_row(session: Session, trigger: str, params: dict[str, Any],
                engine: str = DEFAULT_ENGINE) -> TrainingJob | None:
    """A new queued job, or None when the engine already has a queued/running one (the database
    decides, so two concurrent triggers cannot both win). The caller commits, then publishes."""
    new_id = _insert_ignoring_conflicts(session, TrainingJob.__table__, {
        "id": uuid.uuid4(), "engine": engine, "trigger": trigger, "params": dict(params),
        "status": JobStatus.queued, "metrics": {}, "log": "", "created_at": utcnow(),
    })
    if new_id is None:
        return None
    return session.get(TrainingJob, new_id)


__all__ = ["PENDING_JOB_STATUSES", "add_batch_row", "batch_key", "add_job_row", "pending_job"]
