"""(d) A training job whose process is SIGKILLed after its first checkpoint resumes from that
checkpoint when it runs again: the step does not restart at 0, the job finishes with the right
total steps, and the loss history has every step exactly once. Runs `apa-fleet train --job ID` in
subprocesses against a real Postgres, with SimPO on so the resume also crosses the SFT -> SimPO
stage boundary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from db.engine import make_engine, make_session_factory, session_scope
from db.models import JobStatus, TrainingJob
from fleet.storage import ObjectStore
from tests.conftest import ROOT, SAMPLE_DIR, run_cli
from tests.training_support import (  # noqa: F401
    pg_url,
    pick_clips,
    so_entry,
    tiny_model_path,
    training_defaults,
    write_batch,
)
from training_jobs.batches import register_batch
from training_jobs.triggers import create_job

PARAMS = {"granularity": "sentence_fluency", "headline_aspects": ["sentence.fluency"], "epochs": 4, "lr": 5e-3,
          "grad_accum": 1, "checkpoint_every": 3, "simpo": True, "simpo_epochs": 1, "heldout_fraction": 0.25}


@pytest.mark.slow
def test_sigkilled_job_resumes_from_its_checkpoint(pg_url, tmp_path, tiny_model_path) -> None:  # noqa: F811
    store = ObjectStore(tmp_path / "objects")
    rows = pick_clips(20, 5, max_seconds=4.5)
    scores = {r["utt_id"]: so_entry(r, fluency=2 + (i % 5) * 2) for i, r in enumerate(rows)}
    prefix = write_batch(store, str(tmp_path / "objects" / "batches" / "b1"), scores,
                         {f"{r['utt_id']}.flac": (SAMPLE_DIR / r["audio"]).read_bytes() for r in rows})
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        register_batch(s, store, prefix, training_defaults())
        job_id = create_job(s, "cli", PARAMS, training_defaults()).id

    env = {k: v for k, v in os.environ.items() if not k.startswith(("APA_", "APA_TRAIN_"))}
    env.update({
        "APA_DATABASE_URL": pg_url, "APA_VAR_DIR": str(tmp_path / "var"), "APA_STORAGE_ROOT": str(tmp_path / "objects"),
        "APA_MODEL_PATH": str(tiny_model_path), "APA_DEVICE": "cpu", "APA_TRAIN_CPU_THREADS": "1",
        "APA_TRAIN_PROGRESS_INTERVAL_S": "0.1", "HF_HUB_OFFLINE": "1", "COLUMNS": "120",
    })
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "train", "--job", str(job_id)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with sessions() as s:
                job = s.get(TrainingJob, job_id)
                if job.checkpoint_uri is not None:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = job.checkpoint_uri
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, "the job never wrote a checkpoint"
    assert proc.returncode == -signal.SIGKILL

    with sessions() as s:
        job = s.get(TrainingJob, job_id)
        assert job.status == JobStatus.running and job.attempts == 1  # the row still says running: nobody finished it
        total = job.total_steps
        ckpt_step = int(job.checkpoint_uri.rsplit("-", 1)[1])
    assert 3 <= ckpt_step < total

    out = run_cli(["train", "--job", str(job_id)], env)  # the same command again: resumes
    assert f"resumed from checkpoint at step {ckpt_step}/{total}" in out.stdout.replace("\n", " "), out.stdout

    with sessions() as s:
        job = s.get(TrainingJob, job_id)
    assert job.status == JobStatus.succeeded and job.attempts == 2 and job.error is None
    assert job.step == job.total_steps == total
    n_train = job.metrics["n_train"]
    assert total == 4 * n_train + 1 * n_train  # SFT epochs x items (grad_accum 1) + one SimPO epoch
    t = job.metrics["training"]
    assert t["resumed_from_step"] == ckpt_step and t["steps_this_attempt"] == total - ckpt_step
    assert f"resumed from checkpoint at step {ckpt_step}" in job.log
    report = json.loads(store.get(job.report_uri.rsplit("/", 1)[0] + "/report.json"))
    assert [step for step, _, _ in report["losses"]] == list(range(1, total + 1))
    assert {stage for _, stage, _ in report["losses"]} == {"sft", "simpo"}
    engine.dispose()
