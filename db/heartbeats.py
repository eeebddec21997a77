"""Worker heartbeats in the database: written by worker pool children, read by the gateway."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import WorkerHeartbeat


def record_beat(session: Session, *, id: str, queues: str, hostname: str, pid: int, state: str,
                detail: str | None, started_at: datetime, beat_at: datetime) -> None:
    """Upsert one process's heartbeat (UPDATE, then INSERT if new: each id has one writer)."""
    values = dict(queues=queues, hostname=hostname, pid=pid, state=state, detail=detail,
                  started_at=started_at, beat_at=beat_at)
    res = session.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.id == id).values(**values)
                          .execution_options(synchronize_session=False))
    if res.rowcount == 0:
        session.add(WorkerHeartbeat(id=id, **values))
    session.commit()


def recent_beats(session: Session, since: datetime) -> list[WorkerHeartbeat]:
    """Heartbeats newer than `since` (older rows are workers that are gone, e.g. replaced pods)."""
    return list(session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.beat_at >= since)
                                .order_by(WorkerHeartbeat.id)))
