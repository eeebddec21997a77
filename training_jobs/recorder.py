"""The job row as the run's log: progress, log lines and results, each in its own short transaction."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.models import JobStatus, TrainingJob
from training_jobs.lease import JobLease

log = logging.getLogger(__name__)

LOG_MAX_CHARS = 64_000


class JobRecorder:
    """Writes progress, log lines and results to the job row, each in its own short transaction."""

    def __init__(self, sessions: sessionmaker[Session], job_id: uuid.UUID, *, interval_s: float = 2.0,
                 on_log: Callable[[str], None] | None = None, lease: JobLease | None = None) -> None:
        self.lease = lease
        self.sessions = sessions
        self.job_id = job_id
        self.interval_s = interval_s
        self.on_log = on_log
        self._last_progress = 0.0

    def update(self, log_line: str | None = None, **fields: Any) -> None:
        if self.lease is not None:  # every progress write proves the run still holds the job
            self.lease.check()
        with session_scope(self.sessions) as s:
            job = s.get(TrainingJob, self.job_id)
            for k, v in fields.items():
                setattr(job, k, v)
            if log_line is not None:
                stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                job.log = ((job.log or "") + f"{stamp} {log_line}\n")[-LOG_MAX_CHARS:]
        if log_line is not None:
            log.info("job %s: %s", self.job_id, log_line)
            if self.on_log is not None:
                self.on_log(log_line)

    def log(self, line: str) -> None:
        self.update(line)

    def progress(self, step: int, total: int, epoch: float, loss: float) -> None:
        now = time.monotonic()
        if step < total and now - self._last_progress < self.interval_s:
            return
        self._last_progress = now
        self.update(step=step, total_steps=total, epoch=round(epoch, 4), latest_loss=float(loss))

    def fail(self, exc: BaseException) -> None:
        what = f"{type(exc).__name__}: {exc}"
        where = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]).strip()
        log.error("job %s failed: %s\n%s", self.job_id, what, where)
        self.update(f"failed: {what}", status=JobStatus.failed, error=what[:4000], finished_at=datetime.now(timezone.utc))
