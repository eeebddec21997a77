"""The workers as the gateway sees them: their pool processes' heartbeats in the database, judged
by the shared rule (fleet/worker_health.py). The gateway never imports the workers themselves.

Heartbeats older than GONE_AFTER_S belong to workers that are gone (a replaced pod) and are not
shown; younger ones that are stale, failed or stuck loading show as unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session

from fleet.settings import Settings
from fleet.worker_health import Beat, judge

GONE_AFTER_S = 600.0


@dataclass(frozen=True)
class WorkerStatus:
    id: str
    queues: str
    healthy: bool
    reason: str


def worker_statuses(session: Session, settings: Settings, now: datetime | None = None) -> list[WorkerStatus]:
    from db.heartbeats import recent_beats

    now = now or datetime.now(timezone.utc)
    gone = max(GONE_AFTER_S, 2 * settings.worker_stale_after_s)
    out = []
    for row in recent_beats(session, now - timedelta(seconds=gone)):
        beat = Beat(id=row.id, queues=row.queues, state=row.state, started_at=row.started_at,
                    beat_at=row.beat_at, pid=row.pid, detail=row.detail)
        ok, reason = judge(beat, now, stale_after_s=settings.worker_stale_after_s,
                           load_timeout_s=settings.worker_load_timeout_s)
        out.append(WorkerStatus(row.id, row.queues, ok, reason))
    return out
