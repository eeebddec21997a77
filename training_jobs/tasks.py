"""Celery tasks of the `train` queue, registered on the worker app.

- TRAIN_TASK(job_id): run or resume one job. The message is only a wake-up; the row is the
  record. It is acked on receipt (acks_late off): a training run lasts hours, far past the Redis
  visibility timeout, after which an unacked message would be redelivered to a second worker.
  A worker that dies mid-job is covered by the discovery beat, which re-publishes `running` jobs
  whose advisory lock is free (nobody runs them) and `queued` jobs whose message was lost.
  The time limit is the training one (`APA_TRAIN_TASK_TIME_LIMIT_S`), not the scoring one.
- DISCOVER_BATCHES_TASK(root_prefix=None): the beat scan. Registers new complete batches under
  the root prefix, validates rows left `registered`, creates a `threshold` job when enough new
  utterances wait, and publishes TRAIN_TASK for new and stranded jobs.
"""

from __future__ import annotations

import logging

from db.engine import make_engine, make_session_factory, session_scope
from fleet.queue import DISCOVER_BATCHES_TASK, TRAIN_TASK, publish
from fleet.settings import get_settings
from fleet.storage import ObjectStore
from training_jobs.config import TrainingDefaults
from workers.celery_app import app

log = logging.getLogger(__name__)

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


@app.task(name=DISCOVER_BATCHES_TASK)
def discover_task(root_prefix: str | None = None) -> dict:
    from training_jobs.batches import discover_batches
    from training_jobs.job import jobs_to_wake, maybe_trigger

    settings = get_settings()
    defaults = TrainingDefaults()
    store = ObjectStore.from_settings(settings)
    engine = make_engine(settings.effective_database_url)
    try:
        sessions = make_session_factory(engine)
        with session_scope(sessions) as s:
            found = discover_batches(s, store, root_prefix or default_root(store, defaults), defaults)
            summary = [{"uri": b.uri, "status": b.status.value, "accepted": b.n_accepted} for b in found]
        with session_scope(sessions) as s:
            job = maybe_trigger(s, defaults)
            created = [job.id] if job is not None else []
        with sessions() as s:
            stranded = [j for j in jobs_to_wake(s, defaults) if j not in created]
    finally:
        engine.dispose()
    for job_id in [*created, *stranded]:
        publish(app, TRAIN_TASK, str(job_id))
    if found or created or stranded:
        log.info("discovery: %d batch(es) %s, %d job(s) created, %d re-published", len(found), summary,
                 len(created), len(stranded))
    return {"batches": summary, "created": [str(j) for j in created], "republished": [str(j) for j in stranded]}
