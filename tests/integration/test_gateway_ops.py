"""Operations: /healthz, /readyz (200 and 503), /metrics, the AMQP probe, `apa-fleet gateway`.

(The gateway's promise never to import torch, numpy, workers or training code, on any route, is
`test_gateway_footprint`.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from kombu import Connection, Exchange, Queue

from api_gateway.app import create_app
from fleet.broker import ping_broker, queue_depth
from migrations.runner import upgrade
from fleet.queue import make_celery
from fleet.settings import Settings
from tests.conftest import ROOT, free_port, run_cli, wait_for_port
from tests.integration.gateway_support import Gateway, make_gateway

REDIS_DB = 13
AMQP_URL = os.environ.get("APA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def gw(sqlite_database: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    upgrade(sqlite_database)
    g = make_gateway(sqlite_database, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


def test_healthz_and_readyz(gw: Gateway) -> None:
    assert gw.client.get("/healthz").json() == {"status": "ok"}
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}, "workers": {}}
    with TestClient(create_app(gw.settings, sessions=gw.sessions, store=gw.store)) as client:  # runs the lifespan
        assert client.get("/healthz").status_code == 200


def test_readyz_names_what_is_down(gw: Gateway) -> None:
    closed = free_port()
    broker_down = gw.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{closed}/0"})
    resp = TestClient(create_app(broker_down, sessions=gw.sessions, store=gw.store)).get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable" and body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")

    db_down = gw.settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{closed}/nope"}
    )
    resp = TestClient(create_app(db_down, store=gw.store)).get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["database"].startswith("unreachable") and resp.json()["checks"]["broker"] == "ok"
    assert TestClient(create_app(db_down, store=gw.store)).get("/healthz").status_code == 200


def test_metrics_expose_the_named_series(gw: Gateway) -> None:
    assert gw.post(gw.payload()).status_code == 202
    assert gw.get("/v1/learners/learner-1/scores", "lms_a").status_code == 200
    assert gw.get(f"/v1/submissions/{uuid.uuid4()}", "lms_a").status_code == 404
    resp = gw.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    lines = set(resp.text.splitlines())
    for series in (
        'apa_http_requests_total{method="POST",route="/v1/submissions",status="202"} 1.0',
        'apa_http_requests_total{method="GET",route="/v1/learners/{learner_id}/scores",status="200"} 1.0',
        'apa_http_requests_total{method="GET",route="/v1/submissions/{submission_id}",status="404"} 1.0',
        'apa_http_request_duration_seconds_count{method="POST",route="/v1/submissions",status="202"} 1.0',
        'apa_submissions{status="queued"} 1.0',
        'apa_submissions{status="scored"} 0.0',
        'apa_queue_depth{queue="score"} 1.0',
        'apa_queue_depth{queue="train"} 0.0',
        'apa_metrics_collect_errors{source="database"} 0.0',
        'apa_metrics_collect_errors{source="broker"} 0.0',
    ):
        assert series in lines, series
    assert any(line.startswith("apa_http_request_duration_seconds_bucket{le=") for line in lines)
    assert str(uuid.UUID(int=0)) not in resp.text and "learner-1" not in resp.text  # templates, not paths


def test_amqp_broker_probe_and_queue_depth(tmp_path: Path) -> None:
    """RabbitMQ by URL alone: readiness and a passive queue_declare message count (own queue name)."""
    celery = make_celery(Settings(var_dir=tmp_path, broker_url=AMQP_URL))
    ping_broker(celery)
    name = f"apa-test-{uuid.uuid4().hex[:8]}"
    assert queue_depth(celery, name) == 0  # never declared: nothing waits
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, auto_delete=False)
    with Connection(AMQP_URL) as conn:
        producer = conn.Producer()
        for i in range(2):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key=name, declare=[queue])
        try:
            # publishes are asynchronous (no confirms): RabbitMQ counts them a moment later
            deadline = time.monotonic() + 5
            while queue_depth(celery, name) != 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert queue_depth(celery, name) == 2
        finally:
            queue.bind(conn.default_channel).delete()
            queue.exchange.bind(conn.default_channel).delete()
    closed = make_celery(Settings(var_dir=tmp_path, broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//"))
    with pytest.raises(Exception):
        ping_broker(closed)


def test_cli_runs_the_gateway(cli_env: dict[str, str]) -> None:
    run_cli(["db", "upgrade"], cli_env)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_port(port, timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"{base}/v1/learners/x/scores", timeout=10).status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def test_cli_gateway_refuses_bad_configuration(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, APA_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope")
    proc = run_cli(["gateway", "--port", str(free_port())], env, check=False)
    assert proc.returncode == 2 and "APA_DATABASE_URL" in proc.stderr and "Traceback" not in proc.stderr
