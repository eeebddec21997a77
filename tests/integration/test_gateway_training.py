"""The ops routes of the retraining loop through the real app: batches, jobs, adapters, roles."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from db.engine import session_scope
from db.models import Adapter, AdapterStatus, JobStatus, TrainingJob
from tests.integration.gateway_support import make_gateway
from tests.training_support import SAMPLE_DIR, manifest, so_entry, write_batch

REDIS_DB = 14
OPS_ROUTES = [
    ("post", "/v1/annotation-batches", {"uri": "s3://x/y/"}),
    ("get", "/v1/annotation-batches", None),
    ("post", "/v1/training-jobs", {"params": {}}),
    ("get", "/v1/training-jobs", None),
    ("get", "/v1/training-jobs/00000000-0000-0000-0000-000000000000", None),
    ("get", "/v1/adapters", None),
    ("post", "/v1/adapters/v1/activate", None),
]


@pytest.fixture
def gw(migrated_url: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    g = make_gateway(migrated_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


def call(g, method: str, path: str, key: str | None, body=None):
    headers = {g.settings.api_key_header: g.keys.get(key, key)} if key else {}
    if method == "get":
        return g.client.get(path, headers=headers)
    return g.client.post(path, headers=headers, json=body)


def test_only_ops_may_call_the_training_routes(gw) -> None:
    for method, path, body in OPS_ROUTES:
        for key, expected in (("lms_a", 403), ("teacher_a_c1", 403), ("revoked", 401), (None, 401)):
            assert call(gw, method, path, key, body).status_code == expected, (method, path, key)


def test_batches_are_registered_then_validated_on_the_train_queue(gw) -> None:
    from training_jobs.batches import validate_registered

    rows = manifest()[:3]
    audio = {f"{r['utt_id']}.flac": (SAMPLE_DIR / r["audio"]).read_bytes() for r in rows}
    scores = {r["utt_id"]: so_entry(r) for r in rows}
    scores[rows[2]["utt_id"]]["fluency"] = 14  # out of range: quarantined with its utterance id
    prefix = write_batch(gw.store, f"s3://{gw.bucket}/annotation-batches/b1", scores, audio)
    r = call(gw, "post", "/v1/annotation-batches", "ops", {"uri": prefix})
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["n_items"]) == ("registered", 0)
    empty = write_batch(gw.store, f"s3://{gw.bucket}/annotation-batches/b2", None, audio)
    r2 = call(gw, "post", "/v1/annotation-batches", "ops", {"uri": empty})
    assert r2.status_code == 202
    tasks = [json.loads(m)["headers"] for m in gw.redis.lrange("train", 0, -1)]
    assert sorted((t["task"], t["argsrepr"]) for t in tasks) == sorted(
        ("apa.validate_batch", repr([reply.json()["id"]])) for reply in (r, r2))
    for reply in (r, r2):  # what the validation task does on a training worker
        validate_registered(gw.sessions, gw.store, uuid.UUID(reply.json()["id"]))

    listed = {b["uri"]: b for b in call(gw, "get", "/v1/annotation-batches", "ops").json()}
    got = listed[prefix]
    assert (got["status"], got["n_items"], got["n_accepted"], got["n_quarantined"]) == ("partial", 3, 2, 1)
    assert got["progress"] == {"checked": 3, "total": 3}
    assert [(p["utt_id"], p["code"]) for p in got["problems"]] == [(rows[2]["utt_id"], "score_out_of_range")]
    assert listed[empty]["status"] == "rejected" and listed[empty]["problems"][0]["code"] == "missing_scores"
    again = call(gw, "post", "/v1/annotation-batches", "ops", {"uri": prefix})
    assert again.status_code == 200 and again.json()["status"] == "partial" and again.json()["duplicate"]


def test_training_job_created_published_and_visible(gw) -> None:
    bad = call(gw, "post", "/v1/training-jobs", "ops", {"params": {"epochs": -1}})
    assert bad.status_code == 422 and bad.json()["detail"]["code"] == "bad_params"
    bad = call(gw, "post", "/v1/training-jobs", "ops", {"params": {"no_such_param": 1}})
    assert bad.status_code == 422
    r = call(gw, "post", "/v1/training-jobs", "ops", {"params": {"epochs": 2, "simpo": True}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    messages = [json.loads(m) for m in gw.redis.lrange("train", 0, -1)]
    assert [m["headers"]["task"] for m in messages] == ["apa.train"]
    assert job_id in messages[0]["headers"]["argsrepr"]
    with session_scope(gw.sessions) as s:  # what a running job writes, seen through the route
        job = s.get(TrainingJob, uuid.UUID(job_id))
        job.status, job.step, job.total_steps, job.epoch, job.latest_loss = JobStatus.running, 12, 40, 0.6, 1.25
        job.report_uri = f"s3://{gw.bucket}/training/{job_id}/report.md"
    gw.store.put(f"s3://{gw.bucket}/training/{job_id}/report.md", b"# report")
    got = call(gw, "get", f"/v1/training-jobs/{job_id}", "ops").json()
    assert got["status"] == "running" and got["progress"] == {"step": 12, "total_steps": 40, "epoch": 0.6}
    assert got["latest_loss"] == 1.25 and got["params"] == {"epochs": 2, "simpo": True}
    report = call(gw, "get", f"/v1/training-jobs/{job_id}/report.md", "ops")
    assert report.status_code == 200 and report.content == b"# report"
    assert call(gw, "get", f"/v1/training-jobs/{job_id}/report.png", "ops").status_code == 404


def test_training_jobs_name_their_engine_one_pending_each(gw) -> None:
    """The body's engine picks what is trained (gop head or qwen2-audio LoRA); each engine has its
    own one-pending-job slot, and an unknown engine is a 422."""
    assert call(gw, "post", "/v1/training-jobs", "ops", {"engine": "nope"}).status_code == 422
    gop = call(gw, "post", "/v1/training-jobs", "ops", {"engine": "gop", "params": {"gop_seeds": 1}})
    assert gop.status_code == 202 and gop.json()["engine"] == "gop", gop.text
    again = call(gw, "post", "/v1/training-jobs", "ops", {"engine": "gop"})
    assert again.status_code == 409 and gop.json()["id"] in again.json()["detail"]["message"]
    lora = call(gw, "post", "/v1/training-jobs", "ops", {"engine": "qwen2-audio"})
    assert lora.status_code == 202 and lora.json()["engine"] == "qwen2-audio"


def test_adapters_listed_activated_and_rolled_back(gw) -> None:
    with session_scope(gw.sessions) as s:
        s.add(Adapter(version="v1", base_model="tiny-qwen2-audio", uri="s3://b/a/v1", status=AdapterStatus.active))
        s.add(Adapter(version="v2", base_model="tiny-qwen2-audio", uri="s3://b/a/v2", status=AdapterStatus.candidate))
    assert {a["version"]: a["status"] for a in call(gw, "get", "/v1/adapters", "ops").json()} == {
        "v1": "active", "v2": "candidate"}
    r = call(gw, "post", "/v1/adapters/v2/activate", "ops")
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert {a["version"]: a["status"] for a in call(gw, "get", "/v1/adapters", "ops").json()} == {
        "v1": "retired", "v2": "active"}
    v1_id = next(a["id"] for a in call(gw, "get", "/v1/adapters", "ops").json() if a["version"] == "v1")
    assert call(gw, "post", f"/v1/adapters/{v1_id}/activate", "ops").json()["status"] == "active"  # rollback
    assert call(gw, "post", "/v1/adapters/v9/activate", "ops").status_code == 404
