"""A gateway wired to real services for the test_gateway_* modules.

`make_gateway` builds the app on a migrated database (SQLite or Postgres), Redis as the broker
(one database number per test module, flushed), and moto's S3 server; it creates two tenants
and one API key per role the tests need.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api_gateway.app import create_app
from db.accounts import create_api_key, create_tenant, revoke_api_key
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Role, SentenceScore, Submission, SubmissionStatus
from db.summary import add_scored as add_to_course_summary
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.helpers_webhooks import signed_headers

REDIS_BASE = "redis://127.0.0.1:6379"
AUDIO_BYTES = b"RIFF" + b"\0" * 496  # the gateway only HEADs it; its content is the worker's business
MAX_AUDIO_BYTES = 1000


@dataclass
class TenantInfo:
    id: uuid.UUID
    name: str
    secret: str


@dataclass
class Gateway:
    client: TestClient
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    bucket: str
    redis: redis.Redis
    a: TenantInfo
    b: TenantInfo
    keys: dict[str, str] = field(default_factory=dict)
    engine: Any = None

    def audio_uri(self, key: str = "audio/ok.wav") -> str:
        return f"s3://{self.bucket}/{key}"

    def payload(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "submission_id": f"lms-{uuid.uuid4().hex[:8]}",
            "learner_id": "learner-1",
            "course_id": "c1",
            "assignment_id": "a1",
            "reference_text": "We call it bear",
            "audio_uri": self.audio_uri(),
            "granularity": "full",
            "callback_url": "https://acme.example/apa",
        }
        body.update(overrides)
        return body

    def post(
        self,
        payload: Any,
        *,
        secret: str | None = None,
        key: str | None = "lms_a",
        tenant: str | None = None,
        msg_id: str | None = None,
        timestamp: Any = None,
        body: bytes | None = None,
        tamper: bool = False,
    ):
        raw = body if body is not None else json.dumps(payload).encode()
        headers = signed_headers(secret or self.a.secret, raw, msg_id=msg_id, timestamp=timestamp)
        if tamper:
            raw = raw.replace(b"learner-1", b"learner-2")
        if key:
            headers[self.settings.api_key_header] = self.keys.get(key, key)
        params = {"tenant": tenant} if tenant else None
        return self.client.post("/v1/submissions", content=raw, headers=headers, params=params)

    def get(self, path: str, key: str | None, **params: Any):
        headers = {self.settings.api_key_header: self.keys.get(key, key)} if key else {}
        return self.client.get(path, headers=headers, params=params or None)

    def score_messages(self) -> list[dict[str, Any]]:
        """The Celery messages waiting in the `score` list: task name and args."""
        out = []
        for raw in self.redis.lrange("score", 0, -1):
            msg = json.loads(raw)
            body = msg["body"]
            if msg.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, _kwargs, _embed = json.loads(body)
            out.append({"task": msg["headers"]["task"], "args": args})
        return out

    def submissions(self) -> list[Submission]:
        with self.sessions() as s:
            return list(s.query(Submission).order_by(Submission.created_at).all())

    def close(self) -> None:
        self.client.close()
        self.redis.flushdb()
        self.redis.close()
        if self.engine is not None:
            self.engine.dispose()


def make_gateway(
    database_url: str, *, s3_server: str, bucket: str, tmp_path: Path, redis_db: int, broker_url: str | None = None,
    own_pool: bool = False, **settings_overrides: Any,
) -> Gateway:
    """`own_pool`: the app builds its engine from the settings (db_pool_*), as `apa-fleet gateway` does."""
    redis_url = f"{REDIS_BASE}/{redis_db}"
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=database_url,
        broker_url=broker_url or redis_url,
        storage_backend="s3",
        s3_endpoint_url=s3_server,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_max_attempts=1,
        s3_connect_timeout_s=2,
        max_audio_bytes=MAX_AUDIO_BYTES,
        public_base_url="https://apa.example",
        **settings_overrides,
    )
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    store = ObjectStore.from_settings(settings)
    store.put(f"s3://{bucket}/audio/ok.wav", AUDIO_BYTES)
    store.put(f"s3://{bucket}/audio/big.wav", b"0" * (MAX_AUDIO_BYTES + 1))
    keys: dict[str, str] = {}
    with session_scope(sessions) as s:
        ta = create_tenant(s, "acme", callback_url="https://acme.example/cb", allowed_buckets=[bucket])
        tb = create_tenant(s, "globex", allowed_buckets=[bucket])
        a = TenantInfo(ta.id, ta.name, ta.webhook_secret)
        b = TenantInfo(tb.id, tb.name, tb.webhook_secret)
        keys["lms_a"] = create_api_key(s, Role.lms, tenant=ta)[1]
        keys["lms_b"] = create_api_key(s, Role.lms, tenant=tb)[1]
        keys["teacher_a_c1"] = create_api_key(s, Role.teacher, tenant=ta, courses=["c1"])[1]
        keys["teacher_a_c2"] = create_api_key(s, Role.teacher, tenant=ta, courses=["c2"])[1]
        keys["teacher_b_c1"] = create_api_key(s, Role.teacher, tenant=tb, courses=["c1"])[1]
        keys["ops"] = create_api_key(s, Role.ops)[1]
        revoked, keys["revoked"] = create_api_key(s, Role.lms, tenant=ta)
        s.flush()
        revoke_api_key(s, str(revoked.id))
    app = create_app(settings, store=store) if own_pool else create_app(settings, sessions=sessions, store=store)
    client = TestClient(app)
    return Gateway(client, settings, sessions, store, bucket, r, a, b, keys, engine)


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def add_scored(
    sessions: sessionmaker[Session],
    tenant_id: uuid.UUID,
    *,
    learner_id: str,
    course_id: str,
    lms_id: str,
    at: datetime,
    scores: dict[str, int | None] | None = None,
    status: SubmissionStatus = SubmissionStatus.scored,
    assignment_id: str | None = None,
) -> uuid.UUID:
    """A submission written directly through the session, with a sentence_scores row when scored."""
    sid = uuid.uuid4()
    with session_scope(sessions) as s:
        sub = Submission(
            id=sid, tenant_id=tenant_id, lms_submission_id=lms_id, learner_id=learner_id, course_id=course_id,
            assignment_id=assignment_id, reference_text="WE CALL IT BEAR", audio_uri="s3://b/k.wav",
            granularity="sentence", status=status, created_at=at, updated_at=at,
        )
        if status is SubmissionStatus.scored:
            sub.finished_at = at + timedelta(seconds=2)
            values = scores or {}
            sub.sentence = SentenceScore(
                **{a: v for a, v in values.items()},
                **{f"{a}_expected": (v + 0.25 if v is not None else None) for a, v in values.items()},
            )
        elif status is SubmissionStatus.failed:
            sub.error_code, sub.error_message = "audio_silent", "no speech energy"
        s.add(sub)
        s.flush()
        add_to_course_summary(s, sid)  # as the worker's result transaction does
    return sid
