"""One training job, end to end, recorded in its `training_jobs` row as it goes.

    queued -> running -> succeeded | failed

    batches -> dataset (speaker-disjoint split) -> LoRA SFT (-> SimPO) -> checkpoints
            -> evaluate candidate and baseline on the held-out set -> adapter + metrics to storage
            -> candidate row (+ automatic promotion through the gate) -> report -> succeeded

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
`training_jobs.recorder`; the training modules (torch) are imported inside `run_training_job`.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
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
            snapshot = {"params": dict(job.params or {}), "checkpoint_uri": job.checkpoint_uri,
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
    import torch

    from pronunciation.runtime import resolve_device
    from pronunciation.tiny_model import ensure_model_files
    from training_jobs import evaluate, loop, sft, simpo
    from training_jobs.dataset import cap_items, load_examples, split_by_speaker, usable_batches
    from training_jobs.registry import (
        active_adapter,
        base_model_name,
        gate,
        new_version,
        record_candidate,
        save_adapter,
    )
    from training_jobs.report import STAGE_LABELS, store_report

    t0 = time.monotonic()
    params = resolve_params(defaults, snap["params"])
    prefix = job_prefix(store, settings, job_id)
    workdir = (settings.var_dir / "training" / str(job_id)).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(settings.device)
    if device.type == "cpu" and defaults.cpu_threads:
        torch.set_num_threads(defaults.cpu_threads)
    torch.manual_seed(params.seed)  # LoRA init: the same job starts from the same weights
    rec.log(f"attempt {snap['attempt']} on {device.type}; params {params.model_dump(mode='json')}")

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
                "decide, so the adapter will not be promoted automatically; add annotated speakers")

    # 2. model and stages
    model_path = ensure_model_files(settings.effective_model_path, tiny=settings.uses_tiny_model)
    model, processor = sft.load_trainable_model(model_path, device)
    encoder = sft.ExampleEncoder(processor, params.granularity, defaults.encode_cache_items)
    stages = [sft.sft_stage(model, encoder, split.train, device, epochs=params.epochs, lr=params.lr,
                            grad_accum=params.grad_accum, warmup_ratio=params.warmup_ratio)]
    if params.simpo:
        stages.append(simpo.simpo_stage(
            model, encoder, split.train, device, epochs=params.simpo_epochs, lr=params.simpo_lr,
            grad_accum=params.grad_accum, warmup_ratio=params.warmup_ratio, beta=params.simpo_beta,
            gamma=params.simpo_gamma, lam=params.simpo_lambda, seed=params.seed,
        ))

    # 3. train, resuming from the last checkpoint when there is one
    resume_dir = None
    if snap["checkpoint_uri"]:
        name = snap["checkpoint_uri"].rstrip("/").rsplit("/", 1)[-1]
        resume_dir = workdir / "resume" / name
        shutil.rmtree(resume_dir, ignore_errors=True)
        store.download_folder(snap["checkpoint_uri"], resume_dir)

    def on_checkpoint(folder: Path, state: loop.TrainState) -> None:
        uri = f"{prefix}/checkpoints/{folder.name}"
        store.upload_folder(folder, uri)
        last = state.losses[-1][2] if state.losses else None
        rec.update(f"checkpoint at step {state.global_step}/{state.total_steps}: {uri}", checkpoint_uri=uri,
                   step=state.global_step, total_steps=state.total_steps, latest_loss=last)

    first = 1
    for st in stages:  # say which optimizer steps belong to which stage (SimPO is its own stage)
        rec.log(f"stage {STAGE_LABELS.get(st.name, st.name)}: steps {first}-{first + st.total_steps - 1} "
                f"({st.epochs} epoch(s) of {st.n_items} items)")
        first += st.total_steps

    def on_progress(step: int, total: int, epoch: float, loss: float) -> None:
        rec.progress(step, total, epoch, loss)
        if progress is not None:
            progress(step, total, epoch, loss)

    trainer = loop.Trainer(
        model, stages, seed=params.seed, checkpoint_every=params.checkpoint_every,
        checkpoint_dir=workdir / "checkpoints", keep_checkpoints=defaults.keep_checkpoints,
        max_grad_norm=params.max_grad_norm, weight_decay=params.weight_decay,
        on_checkpoint=on_checkpoint, progress=on_progress,
    )
    rec.update(total_steps=trainer.total_steps)
    t_train = time.monotonic()
    state = trainer.run(resume_dir)
    train_s = time.monotonic() - t_train
    steps_run = state.global_step - (state.resumed_from or 0)
    if state.resumed_from is not None:
        rec.log(f"resumed from checkpoint at step {state.resumed_from}/{state.total_steps}; "
                f"ran {steps_run} remaining steps")
    adapter_dir = workdir / "adapter"
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(str(adapter_dir))
    del trainer, stages, encoder  # optimizer state and cached examples: not needed to evaluate
    if device.type == "cuda":
        torch.cuda.empty_cache()
    training = {
        "steps": state.global_step, "steps_this_attempt": steps_run, "resumed_from_step": state.resumed_from,
        "train_seconds": round(train_s, 2), "steps_per_s": round(steps_run / train_s, 3) if train_s > 0 else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "final_loss": state.losses[-1][2] if state.losses else None, "device": device.type,
    }
    if device.type == "cuda":
        training["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rec.update(f"training done: {state.global_step} steps, {training['steps_per_s']} steps/s",
               step=state.global_step, total_steps=state.total_steps, latest_loss=training["final_loss"])

    # 4. evaluate the candidate and the baseline on the same held-out utterances
    base_name = base_model_name(settings)
    with sessions() as s:
        current = active_adapter(s, base_name)
        baseline = (current.version, current.uri) if current is not None else None
    baseline_label = f"active:{baseline[0]}" if baseline else "base"
    baseline_dir = None
    if baseline:
        baseline_dir = workdir / "baseline" / baseline[0]
        shutil.rmtree(baseline_dir, ignore_errors=True)
        store.download_folder(baseline[1], baseline_dir)
    rec.log(f"evaluating candidate and {baseline_label} on {len(split.heldout)} held-out utterances")
    t_eval = time.monotonic()
    base_model = model.unload()  # the LoRA layers out, the base weights stay in memory
    results = evaluate.evaluate_adapters(
        base_model, processor, model_path=model_path, examples=split.heldout, granularity=params.granularity,
        adapters={"candidate": adapter_dir, baseline_label: baseline_dir}, batch_size=params.eval_batch_size,
    )
    training["eval_seconds"] = round(time.monotonic() - t_eval, 2)
    decision = gate(results["candidate"], results[baseline_label], params.headline_aspects, params.promote_metric,
                    n_heldout=len(split.heldout), min_heldout=params.min_heldout)
    from pronunciation.tiny_model import is_tiny_model

    metrics: dict[str, Any] = {
        "data": data, "granularity": params.granularity.value, "n_train": len(split.train),
        "n_heldout": len(split.heldout), "heldout_speakers": len(split.heldout_speakers),
        "min_heldout": params.min_heldout, "heldout_too_small": len(split.heldout) < params.min_heldout,
        "candidate": results["candidate"], "baseline": results[baseline_label], "baseline_label": baseline_label,
        "gate": decision.as_dict(), "training": training, "model_is_tiny": is_tiny_model(model_path),
    }
    rec.update(f"gate: {decision.reason}", metrics=metrics)

    # 5. registry: the adapter to storage, its row, promotion (idempotent across attempts)
    with sessions() as s:
        existing = s.scalar(select(Adapter).where(Adapter.training_job_id == job_id))
        version = existing.version if existing is not None else new_version(job_id)
    metrics["adapter_version"] = version
    uri = save_adapter(store, settings, adapter_dir, version, metrics)
    promoted, why = record_candidate(sessions, version=version, uri=uri, base_model=base_name, metrics=metrics,
                                     training_job_id=job_id, decision=decision,
                                     compared_with=baseline[0] if baseline else None,
                                     auto_promote=params.auto_promote)
    rec.log(f"adapter {version} registered at {uri}; {why}")

    # 6. report, then done
    training["wall_seconds"] = round(time.monotonic() - t0, 2)
    report_uri = store_report(store, prefix, str(job_id), metrics, state.losses)
    with session_scope(sessions) as s:
        job = s.get(TrainingJob, job_id)
        job.status = JobStatus.succeeded
        job.metrics = metrics
        job.report_uri = report_uri
        job.finished_at = datetime.now(timezone.utc)
        job.step, job.total_steps = state.global_step, state.total_steps
        s.execute(update(AnnotationBatch)
                  .where(AnnotationBatch.id.in_([r.id for r in rows]), AnnotationBatch.used_by_job_id.is_(None))
                  .values(used_by_job_id=job_id))
    rec.log(f"succeeded: report {report_uri}")
    return JobOutcome(job_id, JobStatus.succeeded, version, promoted, metrics)
