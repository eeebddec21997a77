"""(a)+(f) The whole training job on the tiny model, Postgres and moto's S3.

The batch is built from real speechocean762 clips, with ONE learnable aspect: k in {0..3} seconds
of silence inserted mid-utterance (and 3 - k appended, so every clip grows by the same 3 s and only
the pause differs), fluency = 10 - 2k; every other score is constant. The job trains LoRA on the
`sentence_fluency` mode, evaluates candidate and base model on held-out SPEAKERS, registers the
adapter and promotes it through the gate. A score worker's ModelPool then loads it from S3 and
records its version. A second, deliberately untrained job is worse and stays a candidate.

The tiny model is random: these numbers say the pipeline learns, nothing about pronunciation.
Figures are printed (pytest -s) and kept in the job's metrics.
"""

from __future__ import annotations

import time
import uuid

import boto3
import pytest
from sqlalchemy import select

from db.engine import make_engine, make_session_factory, session_scope
from db.models import Adapter, AdapterStatus, AnnotationBatch, BatchStatus, JobStatus, TrainingJob
from fleet.storage import ObjectStore
from tests.training_support import (
    make_pg_database,
    pick_clips,
    settings_for,
    silence_fluency_batch,
    tiny_model_path,  # noqa: F401
    training_defaults,
    write_batch,
)
from training_jobs.batches import register_batch
from training_jobs.triggers import create_job
from training_jobs.job import run_training_job

PARAMS = {
    "granularity": "sentence_fluency", "headline_aspects": ["sentence.fluency"], "epochs": 12, "lr": 5e-3,
    "grad_accum": 2, "checkpoint_every": 100, "heldout_fraction": 0.25, "seed": 0,
}


@pytest.fixture(scope="module")
def env(pg_server, s3_server, tmp_path_factory, tiny_model_path):  # noqa: F811
    url, drop = make_pg_database(pg_server)
    bucket = f"train-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    tmp = tmp_path_factory.mktemp("training-job")
    settings = settings_for(tmp, url, tiny_model_path, storage_backend="s3", s3_endpoint_url=s3_server, s3_access_key_id="test",
                            s3_secret_access_key="test", bucket=bucket)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    yield {"settings": settings, "sessions": sessions, "store": ObjectStore.from_settings(settings),
           "bucket": bucket, "defaults": training_defaults()}
    engine.dispose()
    drop()


@pytest.fixture(scope="module")
def trained(env):
    settings, sessions, store, defaults = env["settings"], env["sessions"], env["store"], env["defaults"]
    rows = pick_clips(80, 16)
    scores, audio = silence_fluency_batch(rows)
    prefix = write_batch(store, f"s3://{env['bucket']}/annotation-batches/pauses", scores, audio)
    seen: list[tuple[int, int, float, float]] = []
    t0 = time.monotonic()
    with session_scope(sessions) as s:
        batch = register_batch(s, store, prefix, defaults)
        assert batch.status == BatchStatus.accepted, batch.problems
        job_id = create_job(s, "manual", PARAMS, defaults).id
    outcome = run_training_job(job_id, settings, sessions, store, lambda *a: seen.append(a), defaults=defaults)
    wall = time.monotonic() - t0
    return {"job_id": job_id, "outcome": outcome, "wall": wall, "progress": seen, "batch_uri": prefix}


def test_learnable_aspect_is_learned_and_promoted(env, trained) -> None:
    out = trained["outcome"]
    assert out.status == JobStatus.succeeded and out.promoted
    with env["sessions"]() as s:
        job = s.get(TrainingJob, trained["job_id"])
        adapter = s.scalar(select(Adapter).where(Adapter.training_job_id == job.id))
        batch = s.scalar(select(AnnotationBatch))
    m = job.metrics
    cand = m["candidate"]["sentence.fluency"]
    base = m["baseline"]["sentence.fluency"]
    t = m["training"]
    print(
        f"\n[tiny model, CPU, 1 torch thread] {m['n_train']} train / {m['n_heldout']} held-out utterances "
        f"({m['heldout_speakers']} speakers); {t['steps']} steps at {t['steps_per_s']:.2f} steps/s, "
        f"peak RSS {t['peak_rss_mb']:.0f} MB, train {t['train_seconds']:.1f} s, eval {t['eval_seconds']:.1f} s"
        f"\nheld-out fluency  base model: PCC {base['expected']['pcc']:.3f} SCC {base['expected']['scc']:.3f} "
        f"RMSE {base['expected']['rmse']:.2f} (argmax SCC {base['argmax']['scc']})"
        f"\n                  trained:    PCC {cand['expected']['pcc']:.3f} SCC {cand['expected']['scc']:.3f} "
        f"RMSE {cand['expected']['rmse']:.2f} (argmax SCC {cand['argmax']['scc']})"
        f"\nregistration -> promoted adapter: {trained['wall']:.1f} s"
    )
    assert m["baseline_label"] == "base" and m["model_is_tiny"]
    assert cand["expected"]["scc"] >= 0.6, cand
    assert cand["expected"]["scc"] - (base["expected"]["scc"] or 0.0) >= 0.4, (cand, base)
    assert cand["expected"]["rmse"] < base["expected"]["rmse"]
    # the row tells the whole story
    assert job.status == JobStatus.succeeded and job.attempts == 1 and job.error is None
    assert job.step == job.total_steps == 12 * 25  # 50 training utterances / grad_accum 2 = 25 steps per epoch
    assert job.epoch == pytest.approx(12.0) and job.latest_loss is not None
    assert job.checkpoint_uri.endswith(f"checkpoints/step-{job.total_steps:07d}")
    assert "training done" in job.log and "promoted" in job.log
    # progress callback: every step, in order, with the total
    steps = [p[0] for p in trained["progress"]]
    assert steps == list(range(1, job.total_steps + 1)) and trained["progress"][-1][1] == job.total_steps
    # registry row, storage objects and report
    assert adapter.status == AdapterStatus.active and adapter.version == out.adapter_version
    names = sorted(o.uri.rsplit("/", 1)[1] for o in env["store"].list(adapter.uri + "/"))
    assert names == ["adapter_config.json", "adapter_model.safetensors", "metrics.json"]
    report = env["store"].get(job.report_uri).decode()
    assert "| sentence.fluency |" in report and "tiny random test model" in report
    png = env["store"].get(job.report_uri.rsplit("/", 1)[0] + "/report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert batch.used_by_job_id == job.id


def test_model_pool_scores_with_the_promoted_adapter(env, trained) -> None:
    """(f) A score worker's ModelPool finds the active adapter in the registry, downloads it from S3,
    and every score records its version."""
    from pronunciation.assess import AssessmentRequest, assess
    from pronunciation.lexicon import build_reference
    from tests.training_support import clip_samples
    from workers.model_pool import ModelPool

    pool = ModelPool(env["settings"], env["sessions"], env["store"])
    model = pool.ready_model()
    version = trained["outcome"].adapter_version
    assert model.active_adapter_version == version
    row = pick_clips(1, 1)[0]
    ref = build_reference(row["text"], [w["phones"] for w in row["words"]])
    [result] = assess(model, [AssessmentRequest(clip_samples(row), ref)])
    assert result.adapter_version == version and result.model_is_tiny


def test_a_worse_candidate_stays_a_candidate(env, trained) -> None:
    """Barely trained (1 epoch at lr 1e-7): about the base model, so worse than the active adapter."""
    with session_scope(env["sessions"]) as s:
        job_id = create_job(s, "manual", {**PARAMS, "epochs": 1, "lr": 1e-7, "grad_accum": 8}, env["defaults"]).id
    out = run_training_job(job_id, env["settings"], env["sessions"], env["store"], defaults=env["defaults"])
    assert out.status == JobStatus.succeeded and not out.promoted
    m = out.metrics
    assert m["baseline_label"] == f"active:{trained['outcome'].adapter_version}"
    assert m["gate"]["promote"] is False and m["gate"]["candidate_mean"] < m["gate"]["baseline_mean"]
    print(f"\nsecond job: candidate SCC {m['gate']['candidate_mean']:.3f} vs active {m['gate']['baseline_mean']:.3f}: "
          f"{m['promotion']}")
    with env["sessions"]() as s:
        rows = {a.version: a.status for a in s.scalars(select(Adapter))}
    assert rows == {trained["outcome"].adapter_version: AdapterStatus.active, out.adapter_version: AdapterStatus.candidate}
