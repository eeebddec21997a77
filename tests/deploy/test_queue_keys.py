"""What the manifests assume about the running system, checked against real Redis and processes:

- KEDA's redis trigger measures the list Celery really fills: publishing a score task makes the
  list named in each ScaledObject one longer.
- `apa-fleet beat` alone sends the periodic tasks to the `deliver` queue (beat.yaml's command).
- The worker probe command of the manifests gets a pong from a real `apa-fleet worker`, and none
  when the node name is another process's; beat's probe passes while the broker answers only.
- A score worker's liveness probe (`apa-fleet worker-health`) passes once a real worker's pool
  child is up with its model, and fails when the children stop beating.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleet.queue import DELIVER_QUEUE, DELIVER_DUE_TASK, SCORE_TASK, SWEEP_TASK, make_celery, publish
from fleet.settings import Settings
from tests.conftest import REDIS_URL, ROOT
from tests.deploy.support import containers, of_kind, parse_cli, runs_beat, workload_containers

pytestmark = pytest.mark.redis


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update(APA_VAR_DIR=str(tmp_path / "var"), APA_BROKER_URL=REDIS_URL, PYTHONPATH=str(ROOT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def test_keda_list_is_the_key_celery_fills(broker: redis.Redis) -> None:
    app = make_celery(Settings(broker_url=REDIS_URL))
    lists = {t["metadata"]["listName"] for so in of_kind("ScaledObject") for t in so["spec"]["triggers"]}
    before = {name: broker.llen(name) for name in lists}
    publish(app, SCORE_TASK, "00000000-0000-0000-0000-000000000000")
    assert {name: broker.llen(name) for name in lists} == {name: n + 1 for name, n in before.items()}
    assert broker.type(next(iter(lists))) == b"list"


@pytest.mark.slow
def test_beat_command_sends_the_periodic_tasks(broker: redis.Redis, tmp_path: Path) -> None:
    [argv] = [c["args"] for _doc, c in workload_containers() if runs_beat(c["args"])]
    _path, params = parse_cli(argv)
    schedule = tmp_path / "beat" / "celerybeat-schedule"
    argv = [a if a != str(params["schedule_file"]) else str(schedule) for a in argv]
    env = _env(tmp_path, APA_SWEEP_INTERVAL_S="0.5", APA_DELIVER_POLL_INTERVAL_S="0.5")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *argv[1:]], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sent: set[str] = set()
        deadline = time.monotonic() + 30
        while not {SWEEP_TASK, DELIVER_DUE_TASK} <= sent and time.monotonic() < deadline:
            raw = broker.rpop(DELIVER_QUEUE)
            if raw is None:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
                continue
            sent.add(json.loads(raw)["headers"]["task"])
        assert {SWEEP_TASK, DELIVER_DUE_TASK} <= sent
        assert schedule.parent.is_dir()
    finally:
        proc.terminate()
        proc.wait(20)


def test_beat_probe_follows_the_broker(broker: redis.Redis, tmp_path: Path) -> None:
    [beat] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "apa-beat"]
    [container] = containers(beat)
    command = container["livenessProbe"]["exec"]["command"]
    assert container["readinessProbe"]["exec"]["command"] == command
    up = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    closed = REDIS_URL.rsplit("/", 1)[0].rsplit(":", 1)[0] + ":1/0"  # nothing listens on port 1
    env = _env(tmp_path) | {"APA_BROKER_URL": closed}
    down = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode != 0 and "Connection" in down.stderr


def _probe(command: list[str], pid: int, env: dict[str, str], timeout_s: int) -> subprocess.CompletedProcess[str]:
    """The manifest's exec probe, with the pod's PID 1 replaced by the worker's PID."""
    assert command[:2] == ["sh", "-c"] and '$(hostname).1"' in command[2]
    script = command[2].replace('$(hostname).1"', f'$(hostname).{pid}"')
    script = re.sub(r"--timeout \d+", f"--timeout {timeout_s}", script)
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_worker_probe_answers_for_its_own_node_only(broker: redis.Redis, tmp_path: Path) -> None:
    [deliver] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "apa-deliver-worker"]
    [container] = containers(deliver)
    env = _env(tmp_path)
    # As the manifests do: the migrations Job runs before any worker (workers refuse an old schema).
    subprocess.run([sys.executable, "-m", "cli.main", "db", "upgrade"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *container["args"][1:]], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # Celery logs "<node> ready." once it consumes
            if line.rstrip().endswith(" ready."):
                break
        else:
            pytest.fail(f"worker exited ({proc.wait()}) before it was ready")
        command = container["livenessProbe"]["exec"]["command"]
        assert container["readinessProbe"]["exec"]["command"] == command
        result = _probe(command, proc.pid, env, timeout_s=10)
        assert result.returncode == 0 and "pong" in result.stdout, result.stdout + result.stderr
        other = _probe(command, proc.pid + 1, env, timeout_s=1)
        assert other.returncode != 0
    finally:
        proc.terminate()
        proc.wait(30)


def _pool_children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


@pytest.mark.slow
def test_score_worker_liveness_probe_follows_its_pool_children(broker: redis.Redis, tmp_path: Path) -> None:
    """The CPU score worker of the manifests, really started: its liveness probe (`apa-fleet
    worker-health`) passes once a pool child has loaded the gop engine, and fails when the children
    stop beating although the main process is alive (which a ping would not notice)."""
    [scorer] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "apa-score-worker-cpu"]
    [container] = containers(scorer)
    command = container["livenessProbe"]["exec"]["command"]
    assert command[0] == "apa-fleet" and command[1] == "worker-health"
    env = _env(tmp_path, APA_WORKER_HEARTBEAT_S="0.5", APA_WORKER_STALE_AFTER_S="3",
               **{e["name"]: e["value"] for e in container.get("env", [])})
    subprocess.run([sys.executable, "-m", "cli.main", "db", "upgrade"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    assert subprocess.run(command, env=env, capture_output=True, text=True, timeout=60).returncode == 1
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *container["args"][1:]], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopped: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            up = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            if up.returncode == 0 and "healthy: ready" in up.stdout:
                break
            assert proc.poll() is None and time.monotonic() < deadline, up.stdout + up.stderr
            time.sleep(0.5)
        stopped = _pool_children(proc.pid)
        assert stopped
        for child in stopped:
            os.kill(child, signal.SIGSTOP)  # alive but silent, like a child wedged in its model
        deadline = time.monotonic() + 30
        while True:
            down = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            if down.returncode == 1:
                break
            assert time.monotonic() < deadline, down.stdout
            time.sleep(0.5)
        assert "no heartbeat" in down.stdout and proc.poll() is None, down.stdout
    finally:
        for child in stopped:
            os.kill(child, signal.SIGCONT)
        proc.terminate()
        proc.wait(60)
