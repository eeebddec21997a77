"""A real fleet in subprocesses: uvicorn gateway, Celery worker(s), Redis or RabbitMQ, Postgres,
moto's S3 server, the tiny Qwen2-Audio, and a local HTTP receiver for the LMS callbacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from db.accounts import create_api_key, create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Role, Submission, SubmissionStatus
from migrations.runner import upgrade
from tests.conftest import ROOT, SAMPLE_DIR, free_port, wait_for_port
from tests.helpers_webhooks import signed_headers

_redis_db_counter = iter(range(2, 16))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from pronunciation.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2-audio"))


@pytest.fixture(scope="session")
def sample_items() -> list[dict]:
    if not (SAMPLE_DIR / "manifest.jsonl").exists():
        pytest.skip("the speechocean762 sample is not on this machine")
    return [json.loads(line) for line in (SAMPLE_DIR / "manifest.jsonl").read_text().splitlines()]


class CallbackReceiver:
    """The LMS side of result delivery: records every POST and whether its signature verifies."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.received: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                    valid = True
                except Exception:
                    payload, valid = json.loads(body), False
                with receiver.lock:
                    receiver.received.append({"valid": valid, "payload": payload, "id": headers.get("webhook-id")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/apa-callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class Fleet:
    env: dict[str, str]
    base_url: str
    sessions: object
    bucket: str
    s3: object
    tenant_secret: str
    lms_key: str
    receiver: CallbackReceiver
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: Path | None = None

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_score_worker(self) -> subprocess.Popen:
        """A score worker (prefork, one child: the process a SIGKILL test kills)."""
        return self.start("score", ["worker", "--queues", "score"])

    def start_deliver_worker(self) -> subprocess.Popen:
        """Callbacks plus beat (sweeper, due deliveries)."""
        return self.start("deliver", ["worker", "--queues", "deliver", "--beat"])

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))

    def upload(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def submit(self, body: dict, *, msg_id: str | None = None) -> httpx.Response:
        raw = json.dumps(body).encode()
        headers = signed_headers(self.tenant_secret, raw, msg_id=msg_id)
        headers["X-API-Key"] = self.lms_key
        headers["content-type"] = "application/json"
        return httpx.post(f"{self.base_url}/v1/submissions", content=raw, headers=headers, timeout=30)

    def submission_body(self, item: dict, audio_uri: str, lms_id: str | None = None) -> dict:
        return {
            "submission_id": lms_id or f"lms-{item['utt_id']}-{uuid.uuid4().hex[:6]}",
            "learner_id": f"learner-{item['speaker']}",
            "course_id": "course-1",
            "reference_text": item["text"],
            "reference_phones": [w["phones"] for w in item["words"]],
            "audio_uri": audio_uri,
            "granularity": "full",
        }

    def wait_finished(self, ids: list[str], timeout_s: float = 300) -> dict[str, Submission]:
        deadline = time.monotonic() + timeout_s
        wanted = [uuid.UUID(i) for i in ids]
        while True:
            with self.sessions() as s:
                rows = s.scalars(select(Submission).where(Submission.id.in_(wanted))).all()
                done = {str(r.id): r for r in rows if r.status in (SubmissionStatus.scored, SubmissionStatus.failed)}
            if len(done) == len(ids):
                return done
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(ids) - len(done)} of {len(ids)} not finished\n{self.log_tail()}")
            time.sleep(0.5)

    def count(self, model, **where) -> int:
        with self.sessions() as s:
            q = select(func.count()).select_from(model)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return s.scalar(q)


def _broker_url(kind: str) -> str:
    if kind == "redis":
        import redis

        if os.environ.get("APA_TEST_REDIS_URL"):  # a Redis database of this run's own
            url = os.environ["APA_TEST_REDIS_URL"]
            redis.Redis.from_url(url).flushdb()
            return url
        db = next(_redis_db_counter)
        redis.Redis.from_url(f"redis://127.0.0.1:6379/{db}").flushdb()
        return f"redis://127.0.0.1:6379/{db}"
    vhost = f"apa-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@pytest.fixture
def fleet_factory(pg_database, s3_server, s3_bucket, tiny_model_dir, tmp_path) -> Iterator:
    fleets: list[Fleet] = []

    def make(broker: str = "redis", *, start_worker: bool = True, extra_env: dict | None = None) -> Fleet:
        upgrade(pg_database)
        engine = make_engine(pg_database)
        sessions = make_session_factory(engine)
        receiver = CallbackReceiver()
        with session_scope(sessions) as s:
            tenant = create_tenant(s, "acme", callback_url=receiver.url, allowed_buckets=[s3_bucket])
            _, key = create_api_key(s, Role.lms, tenant=tenant)
            secret = tenant.webhook_secret
        receiver.secret = secret
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
        env.update({
            "APA_VAR_DIR": str(tmp_path / "var"),
            "APA_DATABASE_URL": pg_database,
            "APA_BROKER_URL": _broker_url(broker),
            "APA_STORAGE_BACKEND": "s3",
            "APA_CALLBACK_ALLOW_LOOPBACK_HTTP": "true",
            "APA_S3_ENDPOINT_URL": s3_server,
            "APA_S3_ACCESS_KEY_ID": "test",
            "APA_S3_SECRET_ACCESS_KEY": "test",
            "APA_BUCKET": s3_bucket,
            "APA_MODEL_PATH": tiny_model_dir,
            "APA_GATEWAY_PORT": str(port),
            "APA_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "APA_REPUBLISH_AFTER_S": "3",
            "APA_STUCK_AFTER_S": "25",
            # A killed worker's rows come back after lease + sweep interval: 11 s, not 31 (the
            # heartbeat still refreshes a running batch's lease every 3.3 s).
            "APA_LEASE_S": "10",
            "APA_SWEEP_INTERVAL_S": "1",
            "APA_DELIVER_POLL_INTERVAL_S": "2",
            "HF_HUB_OFFLINE": "1",
            **(extra_env or {}),
        })
        s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        fleet = Fleet(env, f"http://127.0.0.1:{port}", sessions, s3_bucket, s3, secret, key, receiver, logs=logs)
        fleets.append(fleet)
        fleet.start("gateway", ["gateway", "--port", str(port)])
        wait_for_port(port, 60)
        fleet.start_deliver_worker()
        if start_worker:
            fleet.start_score_worker()
        return fleet

    yield make
    for fleet in fleets:
        for name in list(fleet.procs):
            fleet.stop(name)
        fleet.receiver.close()
