"""Retraining the `gop` head from an annotation batch, through the same job, gate and registry as LoRA.

The batch is 48 real speechocean762 train clips (12 speakers) with their expert labels, in
moto's S3; Postgres is real. GOP features are extracted once (by the first job) into a cache the
later jobs reuse. Three jobs, each judged by the gate on the same speaker-disjoint held-out part:

1. a deliberately weak head (one transformer trained for one epoch, no boosting) against the
   shipped head (no gop version active yet) -> kept as candidate;
   ops activate it by hand, so the active version is now weak;
2. a real head (boosting stack + transformer) against that weak active one -> promoted;
3. the weak recipe again against the real active head -> kept as candidate.

A gop score worker's ModelPool follows the registry without a restart: the shipped head first,
then each activated version (downloaded from S3), and the previous one again after a rollback.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from db.engine import make_engine, make_session_factory, session_scope
from db.models import Adapter, AdapterStatus, BatchStatus, JobStatus, TrainingJob
from fleet.storage import ObjectStore
from tests.conftest import SAMPLE_DIR
from tests.training_support import make_pg_database, training_defaults, write_batch
from training_jobs.batches import register_batch
from training_jobs.job import run_training_job
from training_jobs.registry import activate, rollback
from training_jobs.triggers import create_job

TRAIN_DIR = SAMPLE_DIR.parent / "speechocean762" / "train"
SPEAKERS, PER_SPEAKER = 12, 4
COMMON = {"heldout_fraction": 0.25, "seed": 0, "gop_seeds": 1}
WEAK = {**COMMON, "gop_boosting": False, "gop_epochs": 1}
STRONG = {**COMMON, "gop_boosting": True, "gop_iterations": 60, "gop_min_samples_leaf": 5, "gop_epochs": 40}


def _clips() -> tuple[dict, dict[str, bytes]]:
    """(scores.json subset, audio by file name): the first PER_SPEAKER clips of SPEAKERS speakers."""
    if not (TRAIN_DIR / "scores.json").is_file():
        pytest.skip(f"the speechocean762 train split is not at {TRAIN_DIR}")
    rows = [json.loads(x) for x in (TRAIN_DIR / "manifest.jsonl").read_text().splitlines() if x.strip()]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["speaker"], []).append(r)
    chosen = [r for s in sorted(by)[:SPEAKERS] for r in by[s][:PER_SPEAKER]]
    scores = json.loads((TRAIN_DIR / "scores.json").read_text())
    return ({r["utt_id"]: scores[r["utt_id"]] for r in chosen},
            {f"{r['utt_id']}.ogg": (TRAIN_DIR / r["audio"]).read_bytes() for r in chosen})


@pytest.fixture(scope="module")
def env(pg_server, s3_server, tmp_path_factory):
    from fleet.settings import Settings

    url, drop = make_pg_database(pg_server)
    bucket = f"gop-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    tmp = tmp_path_factory.mktemp("gop-retrain")
    settings = Settings(var_dir=tmp / "var", database_url=url, engine="gop", device="cpu", storage_backend="s3",
                        s3_endpoint_url=s3_server, s3_access_key_id="test", s3_secret_access_key="test", bucket=bucket)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    store = ObjectStore.from_settings(settings)
    defaults = training_defaults(gop_feature_cache=str(tmp / "features"))
    scores, audio = _clips()
    prefix = write_batch(store, f"s3://{bucket}/annotation-batches/so762-train-sample", scores, audio)
    with session_scope(sessions) as s:
        batch = register_batch(s, store, prefix, defaults)
        assert batch.status == BatchStatus.accepted, batch.problems
    yield {"settings": settings, "sessions": sessions, "store": store, "defaults": defaults}
    engine.dispose()
    drop()


def _train(env, params: dict):
    with session_scope(env["sessions"]) as s:
        job_id = create_job(s, "cli", params, env["defaults"], engine="gop").id
    return run_training_job(job_id, env["settings"], env["sessions"], env["store"], defaults=env["defaults"])


def _status(env, version: str) -> AdapterStatus:
    with env["sessions"]() as s:
        return s.query(Adapter).filter_by(version=version).one().status


def test_retrain_promotes_a_better_head_and_keeps_a_worse_one(env) -> None:
    from workers.model_pool import ModelPool

    pool = ModelPool(env["settings"], env["sessions"], env["store"])
    shipped = pool.ready_model().model_version
    assert shipped.startswith("gop-"), shipped

    # 1. weak head vs the shipped head: kept as candidate
    weak = _train(env, WEAK)
    assert weak.status == JobStatus.succeeded
    m = weak.metrics
    assert m["engine"] == "gop" and m["baseline_label"] == f"shipped:{shipped}"
    assert m["n_train"] + m["n_heldout"] == SPEAKERS * PER_SPEAKER and m["heldout_speakers"] >= 2
    assert not weak.promoted and _status(env, weak.adapter_version) == AdapterStatus.candidate
    assert m["gate"]["candidate_mean"] < m["gate"]["baseline_mean"], m["gate"]
    assert m["training"]["utterances_without_features"] == 0
    with env["sessions"]() as s:
        row = s.query(Adapter).filter_by(version=weak.adapter_version).one()
        assert row.base_model == "gop" and row.uri.endswith(f"/{weak.adapter_version}")
    assert pool.ready_model().model_version == shipped  # a candidate does not score

    # ops activate the weak one: the worker switches to it without a restart
    with session_scope(env["sessions"]) as s:
        activate(s, weak.adapter_version)
    assert pool.ready_model().model_version == weak.adapter_version

    # 2. a real head beats the weak active one: promoted, and the worker follows
    strong = _train(env, STRONG)
    ms = strong.metrics
    assert ms["baseline_label"] == f"active:{weak.adapter_version}"
    assert ms["training"]["feature_seconds"] < m["training"]["feature_seconds"]  # features came from the cache
    assert strong.promoted, ms["gate"]
    assert _status(env, strong.adapter_version) == AdapterStatus.active
    assert _status(env, weak.adapter_version) == AdapterStatus.retired
    assert ms["gate"]["candidate_mean"] > ms["gate"]["baseline_mean"] + 0.1, ms["gate"]
    for aspect in ("sentence.total", "sentence.accuracy"):  # 36 training clips: the sentence level learns first
        assert ms["candidate"][aspect]["expected"]["pcc"] > 0.2, (aspect, ms["candidate"][aspect])
    engine = pool.ready_model()
    assert engine.model_version == strong.adapter_version
    with session_scope(env["sessions"]) as s:
        assert s.get(TrainingJob, strong.job_id).report_uri

    # 3. the weak recipe against the real active head: kept as candidate, the real one stays
    worse = _train(env, WEAK)
    assert worse.metrics["baseline_label"] == f"active:{strong.adapter_version}"
    assert not worse.promoted and "kept as candidate" in worse.metrics["promotion"]
    assert _status(env, worse.adapter_version) == AdapterStatus.candidate
    assert _status(env, strong.adapter_version) == AdapterStatus.active
    assert pool.ready_model().model_version == strong.adapter_version

    # rollback = activating the previous version again; the worker switches back
    with session_scope(env["sessions"]) as s:
        assert rollback(s, "gop").version == weak.adapter_version
    assert pool.ready_model().model_version == weak.adapter_version
