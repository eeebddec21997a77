"""Heartbeat leases on claimed submissions.

A claim gives its rows a lease of `lease_s` seconds (workers/claim.py). While the round runs (audio
fetch, the model, the result write) a daemon thread of the same worker process refreshes the
lease every `lease_s / 3`, so a long batch is never taken over; when the process dies the
refreshes stop and the sweeper gives the rows back once the lease has expired, within about a
minute instead of the old fixed 16-minute deadline. The refresh is conditional on the row still
being `running` under this claim's attempt, so a worker that lost its claim refreshes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Submission, SubmissionStatus, utcnow
from workers.claim import Claim

log = logging.getLogger(__name__)


def refresh_leases(session: Session, claims: Sequence[Claim], lease_s: float) -> int:
    """Extend the lease of every row still held under its claim; returns how many were."""
    if not claims:
        return 0
    res = session.execute(
        update(Submission)
        .where(Submission.status == SubmissionStatus.running,
               or_(*(and_(Submission.id == c.id, Submission.attempts == c.attempt) for c in claims)))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount


class LeaseKeeper:
    """Context manager: refreshes the claims' leases in a background thread while the block runs."""

    def __init__(self, sessions: sessionmaker[Session], claims: Sequence[Claim], lease_s: float,
                 interval_s: float | None = None) -> None:
        self.sessions = sessions
        self.claims = list(claims)
        self.lease_s = lease_s
        self.interval_s = interval_s if interval_s is not None else lease_s / 3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.sessions() as s:
                    refresh_leases(s, self.claims, self.lease_s)
            except Exception:  # a database hiccup: try again next tick; the lease has slack
                log.warning("could not refresh the lease of %d rows", len(self.claims), exc_info=True)

    def __enter__(self) -> LeaseKeeper:
        if self.claims:
            self._thread = threading.Thread(target=self._run, name="apa-lease", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
