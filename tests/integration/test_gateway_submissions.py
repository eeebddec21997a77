"""POST /v1/submissions: signed webhooks in, one queued row and one Celery message out.

Real services: SQLite and Postgres (the `database_url` fixtures), Redis as the broker (database
10, flushed), moto's S3 server for the audio HEAD.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_gateway.app import create_app, warm_lexicon
from fleet.broker import queue_depth
from db.accounts import create_api_key, create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Role, SubmissionStatus
from migrations.runner import upgrade
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.conftest import free_port
from tests.helpers_webhooks import signed_json
from tests.integration.gateway_support import Gateway, make_gateway

REDIS_DB = 10


@pytest.fixture
def gw(migrated_url: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    g = make_gateway(migrated_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


@pytest.fixture
def gw_sqlite(sqlite_database: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    upgrade(sqlite_database)
    g = make_gateway(sqlite_database, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


@pytest.fixture
def gw_pg(pg_database: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    upgrade(pg_database)
    g = make_gateway(pg_database, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


def assert_nothing_written(g: Gateway) -> None:
    assert g.submissions() == []
    assert g.score_messages() == []


def test_accepted_webhook_is_queued_and_published(gw: Gateway) -> None:
    payload = gw.payload(submission_id="lms-42")
    resp = gw.post(payload, msg_id="msg_first")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert set(body) == {"id", "status", "status_url", "duplicate"}
    assert body["status"] == "queued" and body["duplicate"] is False
    assert body["status_url"] == f"https://apa.example/v1/submissions/{body['id']}"
    assert resp.headers["location"] == body["status_url"]

    [row] = gw.submissions()
    assert str(row.id) == body["id"] and row.status is SubmissionStatus.queued
    assert (row.tenant_id, row.lms_submission_id, row.webhook_id) == (gw.a.id, "lms-42", "msg_first")
    assert (row.learner_id, row.course_id, row.assignment_id) == ("learner-1", "c1", "a1")
    assert row.granularity == "full" and row.callback_url == "https://acme.example/apa"
    assert row.reference_phones is None and row.attempts == 0

    # the message names the row, and the recording's URI so the worker can fetch it while it claims
    assert gw.score_messages() == [{"task": "apa.score", "args": [body["id"], payload["audio_uri"]]}]

    got = gw.get(f"/v1/submissions/{body['id']}", "lms_a")
    assert got.status_code == 200
    assert got.json()["status"] == "queued" and got.json()["scores"] == {"sentence": None, "words": []}


def test_repeated_delivery_returns_the_existing_submission(gw: Gateway) -> None:
    payload = gw.payload(submission_id="lms-7")
    first = gw.post(payload, msg_id="msg_7")
    assert first.status_code == 202
    sid = first.json()["id"]

    again = gw.post(payload, msg_id="msg_7")  # the LMS retried the same delivery
    assert again.status_code == 200 and again.json() == {**first.json(), "duplicate": True}

    # same webhook id, other content: a conflict, not a duplicate (the LMS must not believe that
    # this different submission was accepted)
    other_body = gw.post(gw.payload(submission_id="lms-8"), msg_id="msg_7")
    assert other_body.status_code == 409, other_body.text
    detail = other_body.json()["detail"]
    assert detail["code"] == "replay_conflict" and detail["submission"] == sid
    assert detail["fields"] == ["submission_id"] and "webhook-id" in detail["message"]

    # same LMS submission id, other content (even under a new webhook id): a conflict too
    for changed in ({"reference_text": "We call it a bear"}, {"learner_id": "learner-9"},
                    {"audio_uri": gw.audio_uri("audio/other.wav")}, {"callback_url": None},
                    {"reference_phones": [["W", "IY1"], ["K", "AO1", "L"], ["IH1", "T"], ["B", "EH1", "R"]]}):
        conflict = gw.post({**payload, **changed}, msg_id=f"msg_7_{next(iter(changed))}")
        assert conflict.status_code == 409, (changed, conflict.text)
        assert conflict.json()["detail"]["fields"] == list(changed)

    # same LMS submission id, new webhook id: the same submission
    new_msg = gw.post(payload, msg_id="msg_7b")
    assert new_msg.status_code == 200 and new_msg.json()["id"] == sid

    assert len(gw.submissions()) == 1
    assert gw.score_messages() == [{"task": "apa.score", "args": [sid, payload["audio_uri"]]}]

    # webhook ids and LMS ids are scoped by tenant: globex may reuse both
    # (without acme's callback URL: a tenant's callbacks go only to its own registered origin)
    globex_payload = {k: v for k, v in payload.items() if k != "callback_url"}
    other = gw.post(globex_payload, msg_id="msg_7", key="lms_b", secret=gw.b.secret)
    assert other.status_code == 202 and other.json()["id"] != sid
    assert len(gw.submissions()) == 2


def test_concurrent_identical_deliveries_make_one_row(gw_pg: Gateway) -> None:
    g = gw_pg
    warm_lexicon()  # so the five requests race on the insert, not on loading CMUdict
    payload = g.payload(submission_id="lms-race")
    stamp = datetime.now(timezone.utc)
    barrier = threading.Barrier(5)
    results: list = []

    def deliver() -> None:
        barrier.wait()
        results.append(g.post(payload, msg_id="msg_race", timestamp=stamp))

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 200, 200, 202], [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert len(g.submissions()) == 1
    assert len(g.score_messages()) == 1


def test_a_delivery_is_one_insert_on_conflict_and_a_repeat_one_more_read(gw: Gateway) -> None:
    """Issue 10: no look-up before the insert, no key or tenant query once cached, no pre-ping;
    a repeat costs the INSERT that made no row and one read of the stored row."""
    from sqlalchemy import event

    first = gw.post(gw.payload())  # caches the key and its tenant
    assert first.status_code == 202
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(gw.engine, "before_cursor_execute", record)
    try:
        payload = gw.payload(submission_id="lms-one-trip")
        new = gw.post(payload)
        assert new.status_code == 202, new.text
        assert len(statements) == 1, statements
        assert statements[0].startswith("INSERT INTO SUBMISSIONS")
        assert "ON CONFLICT DO NOTHING" in statements[0] and "RETURNING" in statements[0]

        statements.clear()
        late = gw.post(payload)  # new webhook id, same LMS submission id: the constraint settles it
        assert late.status_code == 200 and late.json()["id"] == new.json()["id"]
        assert [st.split()[0] for st in statements] == ["INSERT", "SELECT"], statements
    finally:
        event.remove(gw.engine, "before_cursor_execute", record)
    assert len(gw.submissions()) == 2 and len(gw.score_messages()) == 2


def test_lms_without_api_key_identifies_itself_by_tenant(gw_sqlite: Gateway) -> None:
    g = gw_sqlite
    by_name = g.post(g.payload(), key=None, tenant="acme")
    by_id = g.post(g.payload(), key=None, tenant=str(g.a.id))
    assert by_name.status_code == 202 and by_id.status_code == 202
    rows = g.submissions()
    assert len(rows) == 2 and all(r.tenant_id == g.a.id for r in rows)


STALE = datetime.now(timezone.utc) - timedelta(minutes=6)


@pytest.mark.parametrize(
    ("case", "kwargs", "code"),
    [
        ("tampered body", {"tamper": True}, "bad_signature"),
        ("stale timestamp", {"timestamp": "stale"}, "stale_timestamp"),
        ("future timestamp", {"timestamp": "future"}, "stale_timestamp"),
        ("wrong secret", {"secret": "other"}, "bad_signature"),
        ("other tenant's key", {"key": "lms_b"}, "bad_signature"),
        ("unknown tenant", {"key": None, "tenant": "nope"}, "unknown_tenant"),
        ("unknown tenant id", {"key": None, "tenant": str(uuid.uuid4())}, "unknown_tenant"),
        ("no credentials", {"key": None}, "missing_credentials"),
        ("unknown key", {"key": "apa_not-a-key"}, "invalid_api_key"),
        ("revoked key", {"key": "revoked"}, "invalid_api_key"),
        ("key and tenant disagree", {"tenant": "globex"}, "tenant_mismatch"),
        ("no signature headers", {"strip": True}, "missing_signature"),
    ],
)
def test_unauthenticated_deliveries_are_refused(gw_sqlite: Gateway, case: str, kwargs: dict, code: str) -> None:
    g = gw_sqlite
    kwargs = dict(kwargs)
    if kwargs.get("timestamp") == "stale":
        kwargs["timestamp"] = STALE
    elif kwargs.get("timestamp") == "future":
        kwargs["timestamp"] = datetime.now(timezone.utc) + timedelta(minutes=6)
    if kwargs.get("secret") == "other":
        kwargs["secret"] = g.b.secret
    if kwargs.pop("strip", False):
        resp = g.client.post(
            "/v1/submissions", json=g.payload(), headers={g.settings.api_key_header: g.keys["lms_a"]}
        )
    else:
        resp = g.post(g.payload(), **kwargs)
    assert resp.status_code == 401, (case, resp.text)
    detail = resp.json()["detail"]
    assert detail["code"] == code and detail["message"], case
    assert "www-authenticate" in resp.headers
    assert_nothing_written(g)


def test_stale_signature_on_postgres_writes_nothing(gw: Gateway) -> None:
    resp = gw.post(gw.payload(), timestamp=STALE)
    assert resp.status_code == 401 and resp.json()["detail"]["code"] == "stale_timestamp"
    assert_nothing_written(gw)


@pytest.mark.parametrize(
    ("case", "overrides", "status", "code", "mentions"),
    [
        ("unknown word", {"reference_text": "We call it zzyzxqv"}, 422, "unknown_word", "ZZYZXQV"),
        ("empty text", {"reference_text": "  ... "}, 422, "empty_reference", "no words"),
        ("too many words", {"reference_text": " ".join(["bear"] * 61)}, 422, "reference_too_long", "61 words"),
        ("phones do not fit", {"reference_phones": [["W", "IY1"]]}, 422, "bad_phones", "1 words"),
        ("phones not ARPAbet", {"reference_text": "bear", "reference_phones": [["B", "XX"]]}, 422, "bad_phones", "XX"),
        ("bucket not allowed", {"audio_uri": "s3://someone-elses-bucket/a.wav"}, 422, "bucket_not_allowed",
         "someone-elses-bucket"),
        ("missing object", {"audio_uri": "BUCKET/audio/missing.wav"}, 422, "object_not_found", "missing.wav"),
        ("object too large", {"audio_uri": "BUCKET/audio/big.wav"}, 422, "object_too_large", "1001 bytes"),
        ("bucket names no object", {"audio_uri": "BUCKET/"}, 422, "invalid_uri", "names no object"),
        ("unsupported scheme", {"audio_uri": "http://x/y.wav"}, 422, "invalid_uri", "http"),
        ("local path with S3 configured", {"audio_uri": "/etc/passwd"}, 422, "local_path_not_allowed", "s3://"),
        ("bad granularity", {"granularity": "paragraph"}, 422, "invalid_request", "granularity"),
        ("bad callback URL", {"callback_url": "ftp://lms.example/x"}, 422, "invalid_request", "callback_url"),
        ("callback URL without host", {"callback_url": "https://"}, 422, "invalid_request", "callback_url"),
        ("callback on another origin", {"callback_url": "https://evil.example/apa"}, 422, "callback_url_not_allowed",
         "https://acme.example:443"),
        ("callback on another port", {"callback_url": "https://acme.example:8443/apa"}, 422,
         "callback_url_not_allowed", "registered callback origin"),
        ("callback over http", {"callback_url": "http://acme.example/apa"}, 422, "callback_url_not_allowed", "https"),
        ("callback to a private address", {"callback_url": "https://10.0.0.5/apa"}, 422, "callback_url_not_allowed",
         "private"),
        ("callback to the metadata service", {"callback_url": "https://169.254.169.254/latest"}, 422,
         "callback_url_not_allowed", "link-local"),
        ("callback to loopback", {"callback_url": "https://127.0.0.1:9/x"}, 422, "callback_url_not_allowed",
         "loopback"),
        ("callback to localhost", {"callback_url": "https://localhost/x"}, 422, "callback_url_not_allowed",
         "localhost"),
        ("callback with credentials", {"callback_url": "https://u:p@acme.example/apa"}, 422,
         "callback_url_not_allowed", "credentials"),
        ("missing learner", {"learner_id": None}, 422, "invalid_request", "learner_id"),
        ("blank course", {"course_id": "   "}, 422, "invalid_request", "course_id"),
        ("text not a string", {"reference_text": ["a"]}, 422, "invalid_request", "reference_text"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(
    gw_sqlite: Gateway, case: str, overrides: dict, status: int, code: str, mentions: str
) -> None:
    g = gw_sqlite
    overrides = {k: (v.replace("BUCKET", f"s3://{g.bucket}") if isinstance(v, str) else v) for k, v in overrides.items()}
    payload = g.payload(**overrides)
    payload = {k: v for k, v in payload.items() if v is not None}
    resp = g.post(payload)
    assert resp.status_code == status, (case, resp.text)
    detail = resp.json()["detail"]
    assert detail["code"] == code, (case, detail)
    assert mentions in detail["message"], (case, detail)
    assert_nothing_written(g)


def test_malformed_and_oversized_bodies(gw_sqlite: Gateway) -> None:
    g = gw_sqlite
    not_json = g.post(None, body=b"{not json")
    assert not_json.status_code == 422 and not_json.json()["detail"]["code"] == "invalid_json"
    not_object = g.post(None, body=b"[1, 2]")
    assert not_object.status_code == 422 and not_object.json()["detail"]["code"] == "invalid_json"
    huge = g.post(g.payload(padding="x" * 70_000))
    assert huge.status_code == 413 and huge.json()["detail"]["code"] == "body_too_large"
    assert_nothing_written(g)


def test_other_roles_may_not_submit(gw_sqlite: Gateway) -> None:
    g = gw_sqlite
    for key in ("teacher_a_c1", "ops"):
        resp = g.post(g.payload(), key=key)
        assert resp.status_code == 403 and resp.json()["detail"]["code"] == "role_not_allowed"
    assert_nothing_written(g)


def test_unknown_fields_are_ignored_and_phones_normalized(gw_sqlite: Gateway) -> None:
    g = gw_sqlite
    payload = g.payload(
        reference_text="Zzyzx road", reference_phones=[["z", "ay1", "z", "ih0", "k", "s"], ["R", "OW1", "D"]],
        lms_extra={"anything": 1}, granularity="sentence_word",
    )
    del payload["callback_url"], payload["assignment_id"]
    resp = g.post(payload)
    assert resp.status_code == 202, resp.text
    [row] = g.submissions()
    assert row.reference_phones == [["Z", "AY1", "Z", "IH0", "K", "S"], ["R", "OW1", "D"]]
    assert row.granularity == "sentence_word" and row.callback_url is None and row.assignment_id is None


def test_object_store_unreachable_is_503(gw_sqlite: Gateway) -> None:
    g = gw_sqlite
    dead = ObjectStore(
        g.settings.effective_storage_root, backend="s3", endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="test", secret_access_key="test", max_attempts=1, connect_timeout_s=1,
    )
    client = TestClient(create_app(g.settings, sessions=g.sessions, store=dead))
    body, headers = signed_json(g.a.secret, g.payload())
    headers[g.settings.api_key_header] = g.keys["lms_a"]
    resp = client.post("/v1/submissions", content=body, headers=headers)
    assert resp.status_code == 503 and resp.json()["detail"]["code"] == "storage_unavailable"
    assert_nothing_written(g)


def test_broker_down_still_accepts_and_keeps_the_row(gw_sqlite: Gateway) -> None:
    """The row is the record: a failed publish is logged and the sweeper re-publishes later."""
    g = gw_sqlite
    settings = g.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = TestClient(create_app(settings, sessions=g.sessions, store=g.store))
    body, headers = signed_json(g.a.secret, g.payload())
    headers[g.settings.api_key_header] = g.keys["lms_a"]
    started = time.monotonic()
    resp = client.post("/v1/submissions", content=body, headers=headers)
    assert resp.status_code == 202, resp.text
    assert time.monotonic() - started < 15
    [row] = g.submissions()
    assert row.status is SubmissionStatus.queued


def test_local_store_mode(sqlite_database: str, tmp_path: Path) -> None:
    """Embedded mode (APA_STORAGE_BACKEND=local, the default): each tenant's local paths resolve in
    its own folder under the store root and can never name another tenant's files or the service's
    own objects; an s3:// URI is a configuration error (422 naming the setting), never a 503."""
    upgrade(sqlite_database)
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_database)
    assert settings.storage_backend == "local"
    root = settings.effective_storage_root
    engine = make_engine(sqlite_database)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        tenant, other = create_tenant(s, "embedded"), create_tenant(s, "other")
        secret, other_secret = tenant.webhook_secret, other.webhook_secret
        key = create_api_key(s, Role.lms, tenant=tenant)[1]
        other_key = create_api_key(s, Role.lms, tenant=other)[1]
        folder, other_folder = root / "tenants" / str(tenant.id), root / "tenants" / str(other.id)
    for f in (folder, other_folder, root):
        (f / "audio").mkdir(parents=True, exist_ok=True)
        (f / "audio" / "a.wav").write_bytes(b"RIFF0000")
    (tmp_path / "outside.wav").write_bytes(b"RIFF0000")
    app = create_app(settings, sessions=sessions)
    client = TestClient(app)

    def post(uri: str, lms_id: str, *, as_other: bool = False):
        body, headers = signed_json(other_secret if as_other else secret, {
            "submission_id": lms_id, "learner_id": "l", "course_id": "c", "reference_text": "bear",
            "audio_uri": uri,
        })
        headers["X-API-Key"] = other_key if as_other else key
        return client.post("/v1/submissions", content=body, headers=headers)

    def refused(resp, code: str) -> bool:
        return resp.status_code == 422 and resp.json()["detail"]["code"] == code

    assert post("audio/a.wav", "1").status_code == 202  # relative: inside the tenant's folder
    assert post(f"file://{folder / 'audio' / 'a.wav'}", "2").status_code == 202
    assert post(str(folder / "audio" / "a.wav"), "3").status_code == 202
    assert refused(post(str(tmp_path / "outside.wav"), "4"), "access_denied")
    assert refused(post("../../outside.wav", "5"), "access_denied")
    assert refused(post("audio/none.wav", "6"), "object_not_found")
    # another tenant's file, by absolute path or by climbing out of the own folder: refused
    assert refused(post(str(other_folder / "audio" / "a.wav"), "7"), "access_denied")
    assert refused(post(f"../{other.id}/audio/a.wav", "8"), "access_denied")
    # the service's own objects (adapters, reports) lie outside every tenant's folder
    assert refused(post(str(root / "audio" / "a.wav"), "9"), "access_denied")
    # the other tenant reads its own file by the same relative path
    assert post("audio/a.wav", "10", as_other=True).status_code == 202
    s3 = post("s3://bucket/x.wav", "11")
    assert refused(s3, "storage_not_configured") and "APA_STORAGE_BACKEND" in s3.json()["detail"]["message"]
    assert queue_depth(app.state.services.celery, "score") == 4
    engine.dispose()
