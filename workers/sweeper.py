"""The sweeper: Postgres is the record, so a lost message (Redis flushed or restarted, a worker
killed mid-job) is found by age and published again; rows past the attempt limit are dead-lettered
as `failed` with `attempts_exhausted`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from db.models import Submission, SubmissionStatus, utcnow
from workers.persist import mark_failed


@dataclass
class SweepReport:
    republished: list[uuid.UUID] = field(default_factory=list)
    dead_lettered: list[uuid.UUID] = field(default_factory=list)
    deliveries: list[uuid.UUID] = field(default_factory=list)


def sweep(session: Session, *, republish_after_s: float, stuck_after_s: float, max_attempts: int,
          republish_queued: bool = True, limit: int = 500) -> SweepReport:
    """`republish_queued=False` when the broker still holds score messages: a backlog is not a
    loss, and re-publishing every waiting row would flood the queue (and a KEDA scaler on its
    length); once the queue drains, rows whose message was lost are published again."""
    report = SweepReport()
    now = utcnow()
    deadlines = {SubmissionStatus.running: now - timedelta(seconds=stuck_after_s)}
    if republish_queued:
        deadlines[SubmissionStatus.queued] = now - timedelta(seconds=republish_after_s)
    stale = session.execute(
        select(Submission.id, Submission.status, Submission.attempts)
        .where(or_(*(and_(Submission.status == status, Submission.updated_at < deadline)
                     for status, deadline in deadlines.items())))
        .order_by(Submission.updated_at)
        .limit(limit)
    ).all()
    for sub_id, status, attempts in stale:
        if attempts >= max_attempts:
            if (d := mark_failed(session, sub_id, None, "attempts_exhausted",
                                 f"no result after {attempts} attempts")) is not None:
                report.deliveries.append(d)
            report.dead_lettered.append(sub_id)
            continue
        # Running past the deadline means its worker died: give the row back. Queued past the
        # deadline means its message was lost: publish it again. Both touch updated_at so one
        # sweep does not re-publish the same row twice.
        res = session.execute(
            update(Submission)
            .where(Submission.id == sub_id, Submission.status == status, Submission.updated_at < deadlines[status])
            .values(status=SubmissionStatus.queued, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if res.rowcount == 1:
            report.republished.append(sub_id)
    return report
