"""When a training job is created: by ops, by the CLI, or when enough new accepted utterances wait.

No torch here (the CLI and the beat use these); the database allows one queued/running job per
engine, so concurrent triggers cannot create duplicates.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import DEFAULT_ENGINE, AnnotationBatch, BatchStatus, JobStatus, TrainingJob
from db.training import add_job_row, pending_job
from training_jobs.config import TrainingDefaults, resolve_params
from training_jobs.lease import lock_is_free

log = logging.getLogger(__name__)


class JobPending(RuntimeError):
    """The engine already has a queued or running job (the database allows one)."""

    def __init__(self, job: TrainingJob | None) -> None:
        self.job_id = job.id if job is not None else None
        what = f"training job {job.id} is {job.status.value}" if job is not None else "a training job is pending"
        super().__init__(f"{what}; one queued/running job per engine")


def create_job(session: Session, trigger: str, params: dict[str, Any] | None = None,
               defaults: TrainingDefaults | None = None, *, engine: str = DEFAULT_ENGINE) -> TrainingJob:
    """A queued job; params are checked now (ParamsError names a bad key). Raises JobPending when
    the engine already has a queued/running job. The caller commits and then publishes TRAIN_TASK."""
    resolve_params(defaults or TrainingDefaults(), params)
    job = add_job_row(session, trigger, dict(params or {}), engine)
    if job is None:
        raise JobPending(pending_job(session, engine))
    return job


def unused_accepted_items(session: Session) -> int:
    """Accepted utterances in batches that no successful job has used yet."""
    return int(session.scalar(
        select(func.coalesce(func.sum(AnnotationBatch.n_accepted), 0)).where(
            AnnotationBatch.status.in_([BatchStatus.accepted, BatchStatus.partial]),
            AnnotationBatch.used_by_job_id.is_(None),
        )
    ) or 0)


def maybe_trigger(session: Session, settings: TrainingDefaults, *, engine: str = DEFAULT_ENGINE) -> TrainingJob | None:
    """Create a `threshold` job when enough new accepted utterances wait and no job is pending.

    The check below is only a shortcut: the database's one-pending-job-per-engine index decides
    when two triggers (gateway, beat, validation tasks) race, and the loser gets None."""
    if pending_job(session, engine) is not None:
        return None
    n = unused_accepted_items(session)
    if n < settings.trigger_threshold:
        return None
    # A threshold job that failed on the same data would fail again: wait for a new batch.
    last_failed = session.scalar(
        select(func.max(TrainingJob.created_at)).where(TrainingJob.trigger == "threshold",
                                                       TrainingJob.status == JobStatus.failed)
    )
    newest_batch = session.scalar(
        select(func.max(AnnotationBatch.validated_at)).where(
            AnnotationBatch.status.in_([BatchStatus.accepted, BatchStatus.partial]))
    )
    if last_failed is not None and newest_batch is not None and newest_batch <= last_failed:
        log.warning("not re-triggering: the last threshold job failed and no batch was accepted since")
        return None
    resolve_params(settings, {})
    job = add_job_row(session, "threshold", {}, engine)
    if job is None:
        return None
    log.info("%d new accepted utterances >= %d: created training job %s", n, settings.trigger_threshold, job.id)
    return job


def jobs_to_wake(session: Session, defaults: TrainingDefaults) -> list[uuid.UUID]:
    """Jobs whose message may be lost: queued for too long, or `running` with nobody holding the lock."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=defaults.stuck_queued_after_s)
    queued = session.scalars(
        select(TrainingJob.id).where(TrainingJob.status == JobStatus.queued, TrainingJob.created_at < cutoff)
    ).all()
    running = session.scalars(select(TrainingJob.id).where(TrainingJob.status == JobStatus.running)).all()
    engine = session.get_bind()
    return list(queued) + [j for j in running if lock_is_free(engine, j)]
