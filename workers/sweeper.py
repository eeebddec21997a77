"""The sweeper: Postgres is the record, so a lost message (Redis flushed or restarted) is found by
age and published again, and a dead worker's rows are found by their expired lease (the worker's
heartbeat stops refreshing it, workers/lease.py) and given back; rows past the attempt limit are
dead-lettered as `failed` with `attempts_exhausted`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.orm import Session

from db.models import Submission, SubmissionStatus, utcnow
from workers.persist import mark_failed


@dataclass
class SweepReport:
    republished: list[uuid.UUID] = field(default_factory=list)
    dead_lettered: list[uuid.UUID] = field(default_factory=list)
    deliveries: list[uuid.UUID] = field(default_factory=list)


def _worker_lost(now: datetime, stuck_after_s: float) -> ColumnElement[bool]:
    """Running rows whose lease expired; rows claimed without a lease fall back to the old age rule."""
    return and_(Submission.status == SubmissionStatus.running, or_(
        Submission.lease_expires_at < now,
        and_(Submission.lease_expires_at.is_(None), Submission.updated_at < now - timedelta(seconds=stuck_after_s)),
    ))


def _message_lost(now: datetime, republish_after_s: float) -> ColumnElement[bool]:
    """Queued rows that have been due (and untouched) for longer than `republish_after_s`."""
    deadline = now - timedelta(seconds=republish_after_s)
    return and_(Submission.status == SubmissionStatus.queued, Submission.updated_at < deadline,
                or_(Submission.next_attempt_at.is_(None), Submission.next_attempt_at < deadline))


def sweep(session: Session, *, republish_after_s: float, stuck_after_s: float, max_attempts: int,
          republish_queued: bool = True, limit: int = 500) -> SweepReport:
    """`republish_queued=False` when the broker still holds score messages: a backlog is not a
    loss, and re-publishing every waiting row would flood the queue (and a KEDA scaler on its
    length); once the queue drains, rows whose message was lost are published again."""
    report = SweepReport()
    now = utcnow()
    lost = or_(_worker_lost(now, stuck_after_s),
               _message_lost(now, republish_after_s) if republish_queued else false())
    stale = session.execute(
        select(Submission.id, Submission.attempts).where(lost).order_by(Submission.updated_at).limit(limit)
    ).all()
    for sub_id, attempts in stale:
        if attempts >= max_attempts:
            if (d := mark_failed(session, sub_id, None, "attempts_exhausted",
                                 f"no result after {attempts} attempts")) is not None:
                report.deliveries.append(d)
            report.dead_lettered.append(sub_id)
            continue
        # A running row with an expired lease means its worker died: give the row back. Queued
        # past the deadline means its message was lost: publish it again. Both touch updated_at
        # so one sweep does not re-publish the same row twice.
        res = session.execute(
            update(Submission)
            .where(Submission.id == sub_id, lost)
            .values(status=SubmissionStatus.queued, lease_expires_at=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if res.rowcount == 1:
            report.republished.append(sub_id)
    return report
