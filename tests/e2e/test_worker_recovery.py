"""A score worker's pool child that dies comes back and scores again, even when loading the model
takes longer than Celery's 4 s `worker_proc_alive_timeout` default (the 7B model takes 10-14 s; here
the child builds the tiny model on first use, about 6 s). A worker whose child cannot start fails
its liveness probe, and the gateway's /readyz and /metrics show it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from db.models import SubmissionStatus
from tests.conftest import run_cli
from tests.e2e.test_reliability import _children, _submit_items

pytestmark = pytest.mark.slow


def _one_child(parent: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        children = _children(parent)
        if len(children) == 1:
            return children[0]
        assert time.monotonic() < deadline, children
        time.sleep(0.2)


def test_killed_child_with_a_slow_model_load_comes_back_and_scores(fleet_factory, sample_items) -> None:
    # The qwen2-audio engine with no APA_MODEL_PATH: the child builds the tiny model itself, slower
    # than Celery's 4 s default. (Without APA_ENGINE an empty model path now selects gop, which
    # builds nothing under var/models and loads too fast to exercise the slow start.)
    fleet = fleet_factory("redis", start_worker=False, extra_env={"APA_ENGINE": "qwen2-audio", "APA_MODEL_PATH": ""})
    fleet.start_score_worker()
    first = _submit_items(fleet, sample_items[:2])
    done = fleet.wait_finished(list(first), timeout_s=240)
    assert all(d.status == SubmissionStatus.scored for d in done.values()), fleet.log_tail()

    parent = fleet.procs["score"].pid
    child = _one_child(parent)
    shutil.rmtree(Path(fleet.env["APA_VAR_DIR"]) / "models")  # the replacement's load is slow again
    os.kill(child, signal.SIGKILL)
    second = _submit_items(fleet, sample_items[2:4])
    done = fleet.wait_finished(list(second), timeout_s=240)
    assert all(d.status == SubmissionStatus.scored for d in done.values()), fleet.log_tail()
    replacement = _one_child(parent)
    assert replacement != child and fleet.procs["score"].poll() is None
    probe = run_cli(["worker-health", "--queues", "score"], fleet.env, check=False)
    assert probe.returncode == 0 and "healthy: ready" in probe.stdout, probe.stdout + probe.stderr


def test_worker_whose_child_cannot_start_is_reported_unhealthy(fleet_factory, tmp_path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not a model config")
    fleet = fleet_factory("redis", start_worker=False, extra_env={
        "APA_MODEL_PATH": str(broken), "APA_WORKER_LOAD_TIMEOUT_S": "5"})
    fleet.start_score_worker()
    deadline = time.monotonic() + 120
    while True:  # its children die loading the model, one after the other
        probe = run_cli(["worker-health", "--queues", "score"], fleet.env, check=False)
        if probe.returncode == 1 and "unhealthy" in probe.stdout and "#0" in probe.stdout:
            break
        assert time.monotonic() < deadline, probe.stdout + fleet.log_tail()
        time.sleep(1)
    assert fleet.procs["score"].poll() is None  # the parent is alive: only the probe can tell
    assert run_cli(["worker-health", "--queues", "deliver"], fleet.env, check=False).returncode == 0

    ready = httpx.get(f"{fleet.base_url}/readyz", timeout=10)
    body = ready.json()
    assert ready.status_code == 200 and body["status"] == "degraded", body
    score = [v for k, v in body["workers"].items() if k.startswith("score@")]
    deliver = [v for k, v in body["workers"].items() if k.startswith("deliver@")]
    assert score and all(v.startswith("score: unhealthy") for v in score), body
    assert deliver and all(v.startswith("deliver: ok") for v in deliver), body
    metrics = httpx.get(f"{fleet.base_url}/metrics", timeout=10).text.splitlines()
    assert 'apa_workers{health="unhealthy",queues="score"} 1.0' in metrics, [
        m for m in metrics if "apa_workers" in m]
    assert 'apa_workers{health="healthy",queues="deliver"} 1.0' in metrics
