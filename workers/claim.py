"""Claiming submissions: the database decides who scores what.

A Celery message only names one submission. The worker claims that row plus up to B-1 other
queued rows in one transaction (`FOR UPDATE SKIP LOCKED` on Postgres; SQLite serialises writers),
so the GPU sees full batches while prefetch stays at 1 and acks stay per message. Messages whose
row was already claimed find it `running` or done and end as no-ops. Only rows that are due
(`next_attempt_at` unset or past, see fleet/retry.py) are taken, and each claim carries a lease
that the worker's heartbeat (workers/lease.py) keeps fresh while the model runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from db.models import Submission, SubmissionStatus, utcnow


@dataclass(frozen=True)
class Claim:
    """What the worker needs of a claimed row, detached from the session."""

    id: uuid.UUID
    attempt: int
    audio_uri: str
    reference_text: str
    reference_phones: list[list[str]] | None
    granularity: str
    tenant_id: uuid.UUID | None = None  # whose folder a local audio path lies in
    transient_failures: int = 0
    failing_since: datetime | None = None


# The statements are built once: constructing SQLAlchemy expressions on every claim cost more
# CPU than the round trips (profiled), and a claim overlaps the hinted GET (workers/fetch.py) that
# needs the same interpreter.
_DUE = (Submission.status == SubmissionStatus.queued) & or_(
    Submission.next_attempt_at.is_(None), Submission.next_attempt_at <= bindparam("now"))
"""Queued rows whose retry time has come (NULL means due at once)."""

_FIRST = select(Submission.id).where(Submission.id == bindparam("first_id"), _DUE)
_OTHERS = (select(Submission.id).where(_DUE, Submission.id != bindparam("first_id"))
           .order_by(Submission.created_at).limit(bindparam("n")))
_LOCKED = {False: (_FIRST, _OTHERS),
           True: (_FIRST.with_for_update(skip_locked=True), _OTHERS.with_for_update(skip_locked=True))}
# Conditional UPDATE ... RETURNING: only rows still queued are ours; the attempt counter lives in
# the row because a redelivered message carries no count.
_TAKE = (
    update(Submission)
    .where(Submission.id.in_(bindparam("ids", expanding=True)), _DUE)
    .values(status=SubmissionStatus.running, attempts=Submission.attempts + 1, started_at=bindparam("now"),
            updated_at=bindparam("now"), lease_expires_at=bindparam("lease_until"))
    .returning(Submission.id, Submission.attempts, Submission.audio_uri, Submission.reference_text,
               Submission.reference_phones, Submission.granularity, Submission.tenant_id,
               Submission.transient_failures, Submission.failing_since)
    .execution_options(synchronize_session=False)
)


def claim_batch(session: Session, first_id: uuid.UUID, batch_size: int, *, lease_s: float = 30.0) -> list[Claim]:
    """Claim `first_id` (if queued and due) and up to batch_size-1 of the oldest other due rows,
    each with a lease of `lease_s` seconds."""
    now = utcnow()
    first, others = _LOCKED[session.get_bind().dialect.name == "postgresql"]
    ids = list(session.scalars(first, {"first_id": first_id, "now": now}))
    if batch_size > 1:
        ids += list(session.scalars(others, {"first_id": first_id, "now": now, "n": batch_size - len(ids)}))
    claims = []
    if ids:
        rows = session.execute(_TAKE, {"ids": ids, "now": now, "lease_until": now + timedelta(seconds=lease_s)})
        claims = [Claim(*row) for row in rows]
    session.commit()
    return sorted(claims, key=lambda c: (c.id != first_id, str(c.id)))
