"""One training job, end to end, recorded in its `training_jobs` row as it goes.

    queued -> running -> succeeded | failed

    batches -> dataset (speaker-disjoint split) -> the job engine's trainer (training_jobs.trainers:
            LoRA SFT (-> SimPO) with checkpoints for qwen2-audio; the boosting + transformer head
            for gop) -> candidate and baseline evaluated on the held-out set -> model version +
            metrics to storage -> candidate row (+ automatic promotion through the gate) -> report

Postgres is the record, as for scoring. A worker that dies (SIGKILL, OOM, node loss) leaves the
row `running` with its last `checkpoint_uri`; running the job again (redelivery, the discovery
beat's sweep, `apa-fleet train --job ID`) resumes from that checkpoint and replays exactly the
remaining steps. The data set is pinned at the first attempt (the batch ids are stored in the
row), so batches registered in between cannot change what a resumed job trains on. Every run
counts an attempt; past `max_job_attempts` the job fails for good instead of crash-looping.

On Postgres a session-level advisory lock, held on its own connection for the whole run, makes
sure one job runs in one place; the lock dies with the process, which is also how the sweep tells
a crashed `running` job (lock free) from a live one. SQLite (embedded mode) has one worker.

Triggers live in `training_jobs.triggers`, the lock in `training_jobs.lease`, the row writer in
`training_jobs.recorder`, the engines' trainers in `training_jobs.trainers` (imported inside
`run_training_job`, with their torch).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.models import Adapter, AnnotationBatch, JobStatus, TrainingJob
from fleet.settings import Settings
from fleet.storage import ObjectStore, StorageUnavailable
from training_jobs.config import TrainingDefaults, resolve_params
from training_jobs.lease import job_lock
from training_jobs.recorder import JobRecorder

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float, float], None]


class TrainingError(RuntimeError):
    """A job that cannot succeed as configured (no data, one speaker, ...): fails without retry."""


# -- the job --------------------------------------------------------------------------------


@dataclass
class JobOutcome:
    job_id: uuid.UUID
    status: JobStatus
    adapter_version: str | None = None
    promoted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


def job_prefix(store: ObjectStore, settings: Settings, job_id: uuid.UUID) -> str:
    return store.service_uri(settings.bucket, f"training/{job_id}")



def run_training_job(
    job_id: uuid.UUID | str,
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    progress: ProgressFn | None = None,
    *,
    defaults: TrainingDefaults | None = None,
    on_log: Callable[[str], None] | None = None,
    retry_failed: bool = False,
) -> JobOutcome | None:
    """Run (or resume) a job to the end. Returns None when another process holds the job.

    A content error (no data, bad params...) marks the job failed and is raised again; a kill or
    KeyboardInterrupt leaves it `running` for a resume. A `failed` job only runs again with
    `retry_failed` (an operator's decision, e.g. `apa-fleet train --job`): a stale duplicate
    queue message must not restart it.
    """
    defaults = defaults or TrainingDefaults()
    job_id = uuid.UUID(str(job_id))
    engine = sessions.kw.get("bind")
    if engine is None:
        with sessions() as s:
            engine = s.get_bind()
    with job_lock(engine, job_id) as lease:
        if not lease:
            log.info("job %s runs elsewhere (lock held)", job_id)
            return None
        rec = JobRecorder(sessions, job_id, interval_s=defaults.progress_interval_s, on_log=on_log, lease=lease)
        with session_scope(sessions) as s:
            job = s.get(TrainingJob, job_id)
            if job is None:
                raise LookupError(f"no training job {job_id}")
            if job.status == JobStatus.succeeded or (job.status == JobStatus.failed and not retry_failed):
                return JobOutcome(job_id, job.status, job.metrics.get("adapter_version"),
                                  bool(job.metrics.get("promoted")), job.metrics)
            if job.attempts >= defaults.max_job_attempts:
                job.status = JobStatus.failed
                job.error = f"gave up after {job.attempts} attempts (max_job_attempts={defaults.max_job_attempts})"
                job.finished_at = datetime.now(timezone.utc)
                return JobOutcome(job_id, JobStatus.failed)
            job.attempts += 1
            job.status = JobStatus.running
            job.started_at = job.started_at or datetime.now(timezone.utc)
            job.finished_at = None
            job.error = None
            snapshot = {"engine": job.engine, "params": dict(job.params or {}), "checkpoint_uri": job.checkpoint_uri,
                        "attempt": job.attempts, "data": dict((job.metrics or {}).get("data") or {})}
        try:
            return _run(job_id, snapshot, settings, sessions, store, defaults, rec, progress)
        except (StorageUnavailable, OperationalError) as exc:
            # Infrastructure, not the job: it stays `running`, its lock is released, and the
            # discovery beat resumes it from the last checkpoint (max_job_attempts still caps it).
            try:
                rec.log(f"transient fault, will resume from the last checkpoint: {type(exc).__name__}: {exc}")
            except Exception:  # the lease or the database itself is what failed
                log.warning("job %s: transient fault (%s); not recorded", job_id, exc)
            raise
        except Exception as exc:
            rec.fail(exc)
            raise


def _run(job_id: uuid.UUID, snap: dict, settings: Settings, sessions: sessionmaker[Session], store: ObjectStore,
         defaults: TrainingDefaults, rec: JobRecorder, progress: ProgressFn | None) -> JobOutcome:
    from training_jobs.dataset import (
        cap_items,
        load_examples,
        split_by_speaker,
        usable_batches,
    )
    from training_jobs.registry import (
        active_adapter,
        gate,
        new_version,
        record_candidate,
    )
    from training_jobs.report import store_report
    from training_jobs.trainers import Baseline, TrainContext, trainer_for

    t0 = time.monotonic()
    trainer = trainer_for(snap["engine"])
    params = resolve_params(defaults, snap["params"])
    prefix = job_prefix(store, settings, job_id)
    workdir = (settings.var_dir / "training" / str(job_id)).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rec.log(f"attempt {snap['attempt']}, engine {trainer.engine}; params {params.model_dump(mode='json')}")

    # 1. data, pinned at the first attempt
    with sessions() as s:
        pinned = snap["data"].get("batch_ids") or params.batch_ids
        rows = usable_batches(s, pinned)
    if not rows:
        raise TrainingError("no accepted annotation batches to train on")
    batch_ids = [str(r.id) for r in rows]
    examples = cap_items(load_examples(store, rows, defaults), params.max_items, params.seed)
    split = split_by_speaker(examples, params.heldout_fraction)
    n_speakers = len({e.speaker for e in examples})
    if not split.train or not split.heldout:
        raise TrainingError(f"{len(examples)} utterances from {n_speakers} speaker(s): a speaker-disjoint "
                            "held-out split needs at least 2 speakers")
    data = {"batch_ids": batch_ids, "n_items": len(examples)}
    rec.update(
        f"data: {len(examples)} utterances from {len(rows)} batch(es), {n_speakers} speakers; "
        f"{len(split.train)} train, {len(split.heldout)} held out ({len(split.heldout_speakers)} speakers)",
        metrics={"data": data},
    )
    if len(split.heldout) < params.min_heldout:
        rec.log(f"WARNING: only {len(split.heldout)} held-out utterance(s), fewer than min_heldout="
                f"{params.min_heldout} (APA_TRAIN_MIN_HELDOUT): the evaluation is reported but too small to "
                "decide, so the model version will not be promoted automatically; add annotated speakers")

    # 2. train (the engine's trainer; resumable where the engine has checkpoints)
    ctx = TrainContext(job_id=job_id, settings=settings, sessions=sessions, store=store, params=params,
                       defaults=defaults, split=split, workdir=workdir, prefix=prefix,
                       checkpoint_uri=snap["checkpoint_uri"], rec=rec, progress=progress)
    trained = trainer.train(ctx)
    training = trained.training

    # 3. evaluate the candidate and the baseline on the same held-out utterances
    registry_key = trainer.registry_key(settings)
    with sessions() as s:
        current = active_adapter(s, registry_key)
        active = (current.version, current.uri) if current is not None else None
    if active:
        baseline_dir = workdir / "baseline" / active[0]
        shutil.rmtree(baseline_dir, ignore_errors=True)
        store.download_folder(active[1], baseline_dir)
        baseline = Baseline(f"active:{active[0]}", active[0], baseline_dir)
    else:
        baseline = Baseline(trainer.default_baseline_label(settings), None, None)
    rec.log(f"evaluating candidate and {baseline.label} on {len(split.heldout)} held-out utterances")
    t_eval = time.monotonic()
    results = trainer.evaluate(ctx, trained, baseline)
    training["eval_seconds"] = round(time.monotonic() - t_eval, 2)
    decision = gate(results["candidate"], results["baseline"], params.headline_aspects, params.promote_metric,
                    n_heldout=len(split.heldout), min_heldout=params.min_heldout)

    metrics: dict[str, Any] = {
        "engine": trainer.engine, "data": data, "granularity": params.granularity.value, "n_train": len(split.train),
        "n_heldout": len(split.heldout), "heldout_speakers": len(split.heldout_speakers),
        "min_heldout": params.min_heldout, "heldout_too_small": len(split.heldout) < params.min_heldout,
        "candidate": results["candidate"], "baseline": results["baseline"], "baseline_label": baseline.label,
        "gate": decision.as_dict(), "training": training, **trainer.extra_metrics(ctx, trained),
    }
    rec.update(f"gate: {decision.reason}", metrics=metrics)

    # 4. registry: the model version to storage, its row, promotion (idempotent across attempts)
    with sessions() as s:
        existing = s.scalar(select(Adapter).where(Adapter.training_job_id == job_id))
        version = existing.version if existing is not None else new_version(job_id)
    metrics["adapter_version"] = version
    uri = trainer.save(store, settings, trained.folder, version, metrics)
    promoted, why = record_candidate(sessions, version=version, uri=uri, base_model=registry_key, metrics=metrics,
                                     training_job_id=job_id, decision=decision, compared_with=baseline.version,
                                     auto_promote=params.auto_promote)
    rec.log(f"{trainer.engine} version {version} registered at {uri}; {why}")

    # 5. report, then done
    training["wall_seconds"] = round(time.monotonic() - t0, 2)
    report_uri = store_report(store, prefix, str(job_id), metrics, trained.losses)
    with session_scope(sessions) as s:
        job = s.get(TrainingJob, job_id)
        job.status = JobStatus.succeeded
        job.metrics = metrics
        job.report_uri = report_uri
        job.finished_at = datetime.now(timezone.utc)
        job.step, job.total_steps = trained.step, trained.total_steps
        s.execute(update(AnnotationBatch)
                  .where(AnnotationBatch.id.in_([r.id for r in rows]), AnnotationBatch.used_by_job_id.is_(None))
                  .values(used_by_job_id=job_id))
    rec.log(f"succeeded: report {report_uri}")
    return JobOutcome(job_id, JobStatus.succeeded, version, promoted, metrics)
