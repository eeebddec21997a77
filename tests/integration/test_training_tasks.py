"""The Celery side: the beat's discovery task registers a complete batch and publishes its
validation; the validation task validates it, creates a threshold job and publishes TRAIN_TASK to
the `train` queue (real Redis); the train task runs the job. Runs in a subprocess so the worker app
is configured from the environment, as in a worker; it never imports `workers`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REDIS_URL, ROOT, SAMPLE_DIR
from tests.training_support import pg_url, pick_clips, so_entry, tiny_model_path, write_batch  # noqa: F401

SCRIPT = """
import json, sys
from fleet.queue import DISCOVER_BATCHES_TASK, TRAIN_TASK, VALIDATE_BATCH_TASK
from training_jobs.tasks import app, discover_task, train_task, validate_batch_task
for name in (TRAIN_TASK, DISCOVER_BATCHES_TASK, VALIDATE_BATCH_TASK):
    assert type(app.tasks[name]).__module__ == "training_jobs.tasks", name
assert train_task.acks_late is False and train_task.time_limit > 3600 and validate_batch_task.acks_late is False
found = discover_task.apply(args=[{root!r}]).get()
print("DISCOVER", json.dumps(found))
validated = validate_batch_task.apply(args=[found["new_batches"][0]]).get()
print("VALIDATE", json.dumps(validated))
ran = train_task.apply(args=[validated["created"]]).get()
print("TRAIN", json.dumps(ran))
assert not any(m == "workers" or m.startswith("workers.") for m in sys.modules), "training_jobs imported workers"
"""


@pytest.mark.slow
def test_discovery_publishes_and_the_train_task_runs(pg_url, tmp_path, tiny_model_path) -> None:  # noqa: F811
    import redis

    from fleet.storage import ObjectStore

    root = str(tmp_path / "objects" / "annotation-batches")
    rows = pick_clips(8, 4, max_seconds=4.0)
    write_batch(ObjectStore(tmp_path / "objects"), root + "/b1", {r["utt_id"]: so_entry(r) for r in rows},
                {f"{r['utt_id']}.flac": (SAMPLE_DIR / r["audio"]).read_bytes() for r in rows})
    redis_db = 14
    broker = REDIS_URL.rsplit("/", 1)[0] + f"/{redis_db}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update({
        "APA_DATABASE_URL": pg_url, "APA_VAR_DIR": str(tmp_path / "var"), "APA_STORAGE_ROOT": str(tmp_path / "objects"),
        "APA_MODEL_PATH": str(tiny_model_path), "APA_DEVICE": "cpu", "APA_BROKER_URL": broker,
        "APA_TRAIN_TRIGGER_THRESHOLD": "5", "APA_TRAIN_EPOCHS": "1", "APA_TRAIN_CPU_THREADS": "1",
        "APA_TRAIN_HELDOUT_FRACTION": "0.3", "HF_HUB_OFFLINE": "1",
    })
    from migrations.runner import upgrade

    upgrade(pg_url)
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=root)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
             if line.startswith(("DISCOVER ", "VALIDATE ", "TRAIN "))}
    found, validated, ran = lines["DISCOVER"], lines["VALIDATE"], lines["TRAIN"]
    assert len(found["new_batches"]) == 1 and found["created"] == []  # nothing validated yet: no job
    assert validated["status"] == "accepted" and validated["accepted"] == 8
    job_id = validated["created"]
    assert ran["job_id"] == job_id and ran["status"] == "succeeded" and ran["adapter_version"]

    r = redis.Redis.from_url(broker)
    mine = []
    validations = []
    for raw in r.lrange("train", 0, -1):
        msg = json.loads(raw)
        if msg["headers"].get("task") == "apa.train" and job_id in msg["headers"].get("argsrepr", ""):
            mine.append(raw)
        if msg["headers"].get("task") == "apa.validate_batch" and found["new_batches"][0] in msg["headers"]["argsrepr"]:
            validations.append(raw)
    for raw in mine + validations:
        r.lrem("train", 1, raw)
    assert len(mine) == 1, "TRAIN_TASK was not published to the train queue"
    assert len(validations) == 1, "VALIDATE_BATCH_TASK was not published to the train queue"
    uuid.UUID(job_id)
