"""The gateway only accepts and enqueues: it imports no ML stack, no workers, no training code,
on any route, and its process stays small (issue 8, Architecture).

Real services: SQLite or Postgres, Redis as the broker, moto's S3 server; the gateway runs in a
fresh process (a route walk under TestClient, and `apa-fleet gateway` under uvicorn for RSS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from db.accounts import create_api_key, create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Role
from migrations.runner import upgrade
from fleet.storage import ObjectStore
from fleet.settings import Settings
from tests.conftest import ROOT, free_port, wait_for_port
from tests.helpers_webhooks import signed_headers

REDIS_DB = int(os.environ.get("APA_TEST_REDIS_URL", "redis://127.0.0.1:6379/12").rsplit("/", 1)[1])
PEAK_RSS_LIMIT_MIB = 150


def test_no_route_imports_the_ml_stack_workers_or_training(
    sqlite_database: str, s3_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    upgrade(sqlite_database)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.gateway_route_walk", sqlite_database, s3_server, s3_bucket,
         str(tmp_path), str(REDIS_DB)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("REPORT "))[7:])
    routes = report["routes"]
    api_routes = [label for label, r in routes.items() if r["api"]]
    # every route of the gateway, the training (ops) ones included, was called and answered
    for expected in ("POST /v1/submissions", "GET /v1/submissions/{submission_id}",
                     "GET /v1/learners/{learner_id}/scores", "GET /v1/courses/{course_id}/learners",
                     "POST /v1/annotation-batches", "GET /v1/annotation-batches", "POST /v1/training-jobs",
                     "GET /v1/training-jobs", "GET /v1/training-jobs/{job_id}",
                     "GET /v1/training-jobs/{job_id}/report.{kind}", "GET /v1/adapters",
                     "POST /v1/adapters/{adapter}/activate", "GET /healthz", "GET /readyz", "GET /metrics",
                     "GET /openapi.json", "GET /docs"):
        assert expected in routes, (expected, sorted(routes))
    assert len(api_routes) >= 15
    errors = {label: r["status"] for label, r in routes.items() if r["status"] >= 500}
    assert not errors, errors
    heavy = {label: r["imported"] for label, r in routes.items() if r["imported"]}
    assert report["at_start"] == [] and not heavy and report["at_end"] == [], (report["at_start"], heavy)


def test_gateway_peak_rss_stays_under_150_mib(pg_database: str, s3_server: str, s3_bucket: str,
                                                tmp_path: Path) -> None:
    upgrade(pg_database)
    sessions = make_session_factory(make_engine(pg_database))
    with session_scope(sessions) as s:
        tenant = create_tenant(s, "acme", allowed_buckets=[s3_bucket])
        secret = tenant.webhook_secret
        lms = create_api_key(s, Role.lms, tenant=tenant)[1]
        ops = create_api_key(s, Role.ops)[1]
    settings = Settings(var_dir=tmp_path / "var", storage_backend="s3", s3_endpoint_url=s3_server, s3_access_key_id="test",
                        s3_secret_access_key="test")
    ObjectStore.from_settings(settings).put(f"s3://{s3_bucket}/audio/ok.wav", b"RIFF" + b"\0" * 496)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update(APA_VAR_DIR=str(tmp_path / "var"), APA_DATABASE_URL=pg_database,
               APA_BROKER_URL=f"redis://127.0.0.1:6379/{REDIS_DB}", APA_STORAGE_BACKEND="s3", APA_S3_ENDPOINT_URL=s3_server,
               APA_S3_ACCESS_KEY_ID="test", APA_S3_SECRET_ACCESS_KEY="test", APA_BUCKET=s3_bucket)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "gateway", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        try:
            wait_for_port(port, timeout=90)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"the gateway did not start: {proc.communicate()[0][-3000:]}") from None
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(20):
                payload = {"submission_id": f"s{i}", "learner_id": "L", "course_id": "c1",
                           "reference_text": "We call it bear", "audio_uri": f"s3://{s3_bucket}/audio/ok.wav"}
                raw = json.dumps(payload).encode()
                resp = client.post("/v1/submissions", content=raw,
                                   headers={**signed_headers(secret, raw), "X-API-Key": lms})
                assert resp.status_code == 202, resp.text
            for path in ("/v1/learners/L/scores", "/v1/courses/c1/learners", "/v1/training-jobs",
                         "/v1/adapters", "/v1/annotation-batches", "/readyz", "/metrics", "/openapi.json"):
                assert client.get(path, headers={"X-API-Key": ops}).status_code < 500, path
        time.sleep(0.2)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        mapped = sorted({pkg for pkg in ("torch", "numpy", "soundfile", "soxr", "transformers") if f"/{pkg}" in maps})
        assert mapped == [], f"the gateway process has loaded {mapped}"
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        hwm_mib = int(next(line.split()[1] for line in status if line.startswith("VmHWM"))) / 1024
        print(f"gateway peak RSS (VmHWM): {hwm_mib:.0f} MiB")
        assert hwm_mib <= PEAK_RSS_LIMIT_MIB, f"gateway peak RSS {hwm_mib:.0f} MiB > {PEAK_RSS_LIMIT_MIB} MiB"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
