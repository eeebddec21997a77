"""Celery tasks of the `train` queue, registered on the shared worker app (`fleet.queue.worker_app`;
this package never imports `workers`).

- TRAIN_TASK(job_id): run or resume one job. The message is only a wake-up; the row is the
  record. It is acked on receipt (acks_late off): a training run lasts hours, far past the Redis
  visibility timeout, after which an unacked message would be redelivered to a second worker.
  A worker that dies mid-job is covered by the discovery beat, which re-publishes `running` jobs
  whose advisory lock is free (nobody runs them) and `queued` jobs whose message was lost.
  The time limit is the training one (`APA_TRAIN_TASK_TIME_LIMIT_S`), not the scoring one.
- VALIDATE_BATCH_TASK(batch_id): validate a `registered` batch (the gateway and discovery only
  write the row), committing per chunk; then create a `threshold` job when enough new utterances
  wait, and publish it. Acked on receipt too: a large batch may run past the visibility timeout;
  its committed progress survives a kill and the beat re-publishes a stalled one, which resumes.
- DISCOVER_BATCHES_TASK(root_prefix=None): the beat scan, on the train queue (never beside the
  callbacks). Lists the root prefix, registers new complete batches, publishes their validation
  and that of stalled ones, creates a `threshold` job when enough new utterances wait, and
  publishes TRAIN_TASK for new and stranded jobs. It reads no audio.
"""

from __future__ import annotations

import logging
import uuid

from db.engine import make_engine, make_session_factory, session_scope
from fleet.queue import DISCOVER_BATCHES_TASK, TRAIN_TASK, VALIDATE_BATCH_TASK, publish, worker_app
from fleet.settings import get_settings
from fleet.storage import ObjectStore
from training_jobs.config import TrainingDefaults

log = logging.getLogger(__name__)

app = worker_app()
_DEFAULTS = TrainingDefaults()


def default_root(store: ObjectStore, defaults: TrainingDefaults) -> str:
    return defaults.discover_root or store.service_uri(get_settings().bucket, "annotation-batches/")


@app.task(name=TRAIN_TASK, acks_late=False, time_limit=_DEFAULTS.task_time_limit_s,
          soft_time_limit=_DEFAULTS.task_time_limit_s - 60)
def train_task(job_id: str) -> dict:
    from training_jobs.job import run_training_job

    settings = get_settings()
    engine = make_engine(settings.effective_database_url)
    try:
        outcome = run_training_job(job_id, settings, make_session_factory(engine), ObjectStore.from_settings(settings),
                                   defaults=TrainingDefaults())
    finally:
        engine.dispose()
    if outcome is None:
        return {"job_id": job_id, "status": "running elsewhere"}
    return {"job_id": job_id, "status": outcome.status.value, "adapter_version": outcome.adapter_version,
            "promoted": outcome.promoted}


@app.task(name=VALIDATE_BATCH_TASK, acks_late=False, time_limit=_DEFAULTS.task_time_limit_s,
          soft_time_limit=_DEFAULTS.task_time_limit_s - 60)
def validate_batch_task(batch_id: str) -> dict:
    from training_jobs.batches import validate_registered
    from training_jobs.triggers import maybe_trigger

    settings = get_settings()
    defaults = TrainingDefaults()
    engine = make_engine(settings.effective_database_url)
    try:
        sessions = make_session_factory(engine)
        row = validate_registered(sessions, ObjectStore.from_settings(settings), uuid.UUID(batch_id), defaults)
        with session_scope(sessions) as s:
            job = maybe_trigger(s, defaults, engine=settings.effective_engine)
            created = str(job.id) if job is not None else None
    finally:
        engine.dispose()
    if created is not None:
        publish(app, TRAIN_TASK, created)
    if row is None:
        return {"batch_id": batch_id, "status": "nothing to do (validated, or validated elsewhere)",
                "created": created}
    return {"batch_id": batch_id, "status": row.status.value, "n_items": row.n_items, "accepted": row.n_accepted,
            "created": created}


@app.task(name=DISCOVER_BATCHES_TASK)
def discover_task(root_prefix: str | None = None) -> dict:
    from training_jobs.batches import discover_batches, stalled_validations
    from training_jobs.triggers import jobs_to_wake, maybe_trigger

    settings = get_settings()
    defaults = TrainingDefaults()
    store = ObjectStore.from_settings(settings)
    engine = make_engine(settings.effective_database_url)
    try:
        sessions = make_session_factory(engine)
        with session_scope(sessions) as s:
            new = [str(b.id) for b in discover_batches(s, store, root_prefix or default_root(store, defaults))]
        with sessions() as s:
            stalled = [str(b) for b in stalled_validations(s, defaults) if str(b) not in new]
        with session_scope(sessions) as s:
            job = maybe_trigger(s, defaults, engine=settings.effective_engine)
            created = [job.id] if job is not None else []
        with sessions() as s:
            stranded = [j for j in jobs_to_wake(s, defaults) if j not in created]
    finally:
        engine.dispose()
    for batch_id in [*new, *stalled]:
        publish(app, VALIDATE_BATCH_TASK, batch_id)
    for job_id in [*created, *stranded]:
        publish(app, TRAIN_TASK, str(job_id))
    if new or stalled or created or stranded:
        log.info("discovery: %d new batch(es), %d stalled validation(s), %d job(s) created, %d re-published",
                 len(new), len(stalled), len(created), len(stranded))
    return {"new_batches": new, "revalidated": stalled, "created": [str(j) for j in created],
            "republished": [str(j) for j in stranded]}
