"""Refusals at the gateway's edge (issue 8, defects 2-6): NUL characters, edge datetimes, role
before body, non-JSON and non-UTF-8 bodies, and a database that is gone.

Real services: Postgres (it is Postgres that cannot hold U+0000, and a dropped database is a real
outage), SQLite for the datetime bounds too, Redis as the broker, moto's S3 server.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from api_gateway.routes.learners import encode_cursor
from migrations.runner import upgrade
from tests.integration.gateway_support import T0, Gateway, add_scored, make_gateway

REDIS_DB = int(os.environ.get("APA_TEST_REDIS_URL", "redis://127.0.0.1:6379/12").rsplit("/", 1)[1])


@pytest.fixture
def gw(migrated_url: str, s3_server: str, s3_bucket: str, tmp_path: Path) -> Iterator[Gateway]:
    g = make_gateway(migrated_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


@pytest.fixture
def gw_pg(pg_database: str, s3_server: str, s3_bucket: str, tmp_path: Path) -> Iterator[Gateway]:
    upgrade(pg_database)
    g = make_gateway(pg_database, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


def assert_refused(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, dict) and detail["code"] == code and detail["message"], detail
    return detail


# --- 2. NUL characters -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["submission_id", "learner_id", "course_id", "assignment_id",
                                   "reference_text", "audio_uri", "callback_url"])
def test_nul_in_any_submission_field_is_422(gw_pg: Gateway, field: str) -> None:
    value = gw_pg.payload()[field] + "\x00x"
    assert_refused(gw_pg.post(gw_pg.payload(**{field: value})), 422, "nul_character")
    assert gw_pg.submissions() == []


def test_nul_in_a_nested_body_value_or_key_is_422(gw_pg: Gateway) -> None:
    phones = gw_pg.payload(reference_text="bear", reference_phones=[["B", "EH1\x00", "R"]])
    assert_refused(gw_pg.post(phones), 422, "nul_character")
    ops = {gw_pg.settings.api_key_header: gw_pg.keys["ops"]}
    job = gw_pg.client.post("/v1/training-jobs", json={"params": {"epochs\x00": 1}}, headers=ops)
    assert_refused(job, 422, "nul_character")
    batch = gw_pg.client.post("/v1/annotation-batches", json={"uri": f"s3://{gw_pg.bucket}/x\x00"}, headers=ops)
    assert_refused(batch, 422, "nul_character")


@pytest.mark.parametrize("declared", ["audio/wav", "application/octet-stream", "multipart/form-data; boundary=x"])
def test_a_declared_binary_content_type_does_not_skip_the_nul_check(gw_pg: Gateway, declared: str) -> None:
    """The client picks the content type: only the route (the LTI recording upload) may skip the check."""
    from tests.helpers_webhooks import signed_headers

    raw = json.dumps(gw_pg.payload(learner_id="a\x00b")).encode()
    headers = {**signed_headers(gw_pg.a.secret, raw), gw_pg.settings.api_key_header: gw_pg.keys["lms_a"],
               "content-type": declared}
    assert_refused(gw_pg.client.post("/v1/submissions", content=raw, headers=headers), 422, "nul_character")
    ops = {gw_pg.settings.api_key_header: gw_pg.keys["ops"], "content-type": declared}
    job = gw_pg.client.post("/v1/training-jobs", content=b'{"params": {"epochs\\u0000": 1}}', headers=ops)
    assert_refused(job, 422, "nul_character")
    assert gw_pg.submissions() == []


def test_an_escaped_backslash_before_u0000_is_not_a_nul(gw_pg: Gateway) -> None:
    resp = gw_pg.post(gw_pg.payload(learner_id="x\\u0000y"))  # the text `x\u0000y`, no NUL in it
    assert resp.status_code == 202, resp.text
    assert gw_pg.submissions()[0].learner_id == "x\\u0000y"


@pytest.mark.parametrize("path", [
    "/v1/learners/a%00b/scores",
    "/v1/learners/L/scores?assignment_id=%00",
    "/v1/learners/L/scores?course_id=c1%00",
    "/v1/courses/a%00b/learners",
    "/v1/submissions/a%00b",
    "/v1/training-jobs/a%00b",
    "/v1/adapters/a%00b/activate",
    "/healthz?x=%00",
])
def test_nul_in_path_or_query_is_422(gw_pg: Gateway, path: str) -> None:
    headers = {gw_pg.settings.api_key_header: gw_pg.keys["ops"]}
    method = gw_pg.client.post if path.endswith("/activate") else gw_pg.client.get
    assert_refused(method(path, headers=headers), 422, "nul_character")


# --- 3. Edge datetimes -------------------------------------------------------------------------


def test_edge_datetimes_are_clamped_not_500(gw: Gateway) -> None:
    ids = [add_scored(gw.sessions, gw.a.id, learner_id="L", course_id="c1", lms_id=f"s{i}",
                      at=T0 + timedelta(minutes=i), scores={"accuracy": 5}) for i in range(3)]
    newest_first = [str(i) for i in reversed(ids)]

    def items(**params) -> list[str]:
        resp = gw.get("/v1/learners/L/scores", "lms_a", **params)
        assert resp.status_code == 200, resp.text
        return [it["id"] for it in resp.json()["items"]]

    assert items(since="0001-01-01T00:00:00+01:00") == newest_first
    assert items(until="9999-12-31T23:59:59-01:00") == newest_first
    assert items(since="9999-12-31T23:59:59-01:00") == []
    assert items(until="0001-01-01T00:00:00+01:00") == []
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=1)))
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert items(cursor=encode_cursor((late, uuid.uuid4()))) == newest_first
    assert items(cursor=encode_cursor((early, uuid.uuid4()))) == []


# --- 6. Role before body, one error shape ------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/training-jobs", "/v1/annotation-batches"])
@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe{}", b"[1, 2"], ids=["bad-json", "non-utf8", "truncated"])
def test_role_is_checked_before_the_body_is_parsed(gw_pg: Gateway, route: str, body: bytes) -> None:
    header = gw_pg.settings.api_key_header
    json_ct = {"content-type": "application/json"}
    assert_refused(gw_pg.client.post(route, content=body, headers={**json_ct, header: gw_pg.keys["lms_a"]}),
                   403, "role_not_allowed")
    assert_refused(gw_pg.client.post(route, content=body, headers={**json_ct, header: gw_pg.keys["teacher_a_c1"]}),
                   403, "role_not_allowed")
    assert_refused(gw_pg.client.post(route, content=body, headers=json_ct), 401, "missing_api_key")
    assert_refused(gw_pg.client.post(route, content=body, headers={**json_ct, header: "nope"}), 401, "invalid_api_key")
    assert_refused(gw_pg.client.post(route, content=body, headers={**json_ct, header: gw_pg.keys["ops"]}),
                   422, "invalid_json")


def test_fastapi_refusals_use_the_documented_error_shape(gw_pg: Gateway) -> None:
    header = gw_pg.settings.api_key_header
    ops = {header: gw_pg.keys["ops"]}
    text_body = gw_pg.client.post("/v1/training-jobs", content=b"epochs=2",
                                  headers={**ops, "content-type": "text/plain"})
    detail = assert_refused(text_body, 422, "invalid_request")
    assert detail["errors"] and {"loc", "msg", "type"} <= set(detail["errors"][0])
    bad_query = gw_pg.get("/v1/learners/L/scores", "lms_a", limit=1000)
    assert assert_refused(bad_query, 422, "invalid_request")["errors"][0]["loc"] == ["query", "limit"]
    assert_refused(gw_pg.client.get("/v1/nothing-here", headers=ops), 404, "not_found")
    assert_refused(gw_pg.client.delete("/v1/training-jobs", headers=ops), 405, "method_not_allowed")


def test_openapi_documents_the_refusals(gw: Gateway) -> None:
    doc = gw.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(doc)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert responses["422"]["content"]["application/json"]["schema"] == error_ref, (path, method)
            assert "non" in responses["422"]["description"] or "UTF-8" in responses["422"]["description"]
            if path.startswith("/v1/"):
                for status in ("401", "403", "503"):
                    assert status in responses, (path, method, status)
                assert "Retry-After" in responses["503"]["headers"]
    assert "409" in doc["paths"]["/v1/submissions"]["post"]["responses"]
    # a browser-facing LTI route refuses as an HTML page, the edge (NUL, body cap) as JSON: both documented
    deep_link = doc["paths"]["/lti/s/{token}/deep-link"]["post"]["responses"]
    for status in ("413", "422"):
        assert set(deep_link[status]["content"]) == {"application/json", "text/html"}, status
    upload = doc["paths"]["/lti/s/{token}/recordings"]["post"]["responses"]
    assert upload["404"]["content"]["application/json"]["schema"] == error_ref


# --- 5. Database unavailable -------------------------------------------------------------------


def test_a_dropped_database_is_503_with_retry_after_everywhere(gw_pg: Gateway, pg_database: str) -> None:
    header = gw_pg.settings.api_key_header
    ops, lms = {header: gw_pg.keys["ops"]}, {header: gw_pg.keys["lms_a"]}
    assert gw_pg.client.get("/v1/training-jobs", headers=ops).status_code == 200  # pooled connections exist
    admin = create_engine(pg_database.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # the outage: the gateway's database disappears under it
        conn.execute(text(f'DROP DATABASE "{pg_database.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()
    # A key cached before the outage (issue 10) still passes the role check without the database
    # for up to auth_cache_ttl_s; then the body is checked as usual.
    cached = gw_pg.client.post("/v1/training-jobs", headers={**ops, "content-type": "application/json"},
                               content=b"{not json")
    assert_refused(cached, 422, "invalid_json")
    gw_pg.client.app.state.services.credentials.clear()  # past the TTL: every key is read again

    requests = [
        ("GET", "/v1/submissions/" + str(uuid.uuid4()), lms, None),
        ("GET", "/v1/learners/L/scores", lms, None),
        ("GET", "/v1/courses/c1/learners", lms, None),
        ("GET", "/v1/training-jobs", ops, None),
        ("GET", f"/v1/training-jobs/{uuid.uuid4()}", ops, None),
        ("GET", "/v1/annotation-batches", ops, None),
        ("GET", "/v1/adapters", ops, None),
        ("POST", "/v1/adapters/v1/activate", ops, None),
        ("POST", "/v1/training-jobs", ops, b"{}"),
        ("POST", "/v1/training-jobs", ops, b"{not json"),  # the role check needs the database too
        ("POST", "/v1/annotation-batches", ops, json.dumps({"uri": f"s3://{gw_pg.bucket}/b/"}).encode()),
    ]
    for method, path, headers, body in requests:
        resp = gw_pg.client.request(method, path, headers={**headers, "content-type": "application/json"},
                                    content=body)
        assert_refused(resp, 503, "database_unavailable")
        assert int(resp.headers["Retry-After"]) > 0, (method, path)
    delivery = gw_pg.post(gw_pg.payload())
    assert_refused(delivery, 503, "database_unavailable")
    assert delivery.headers["Retry-After"]
    assert gw_pg.client.get("/readyz").status_code == 503
    assert gw_pg.client.get("/healthz").status_code == 200
    assert gw_pg.client.get("/metrics").status_code == 200  # the scrape reports what it can


def test_an_unreachable_database_server_is_503(tmp_path: Path) -> None:
    from api_gateway.app import create_app
    from db.engine import make_engine, make_session_factory
    from fleet.settings import Settings
    from tests.conftest import free_port

    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    settings = Settings(var_dir=tmp_path / "var", database_url=dead,
                        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}")
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings, sessions=make_session_factory(make_engine(dead)))) as client:
        resp = client.get("/v1/learners/L/scores", headers={settings.api_key_header: "apa_whatever"})
        assert_refused(resp, 503, "database_unavailable")
        assert resp.headers["Retry-After"]


def test_the_edge_buffers_bodies_only_up_to_its_cap(gw: Gateway) -> None:
    from api_gateway.edge import MAX_EDGE_BODY_BYTES

    ops = {gw.settings.api_key_header: gw.keys["ops"], "content-type": "application/json"}
    big = b'{"params": {"x": "' + b"a" * MAX_EDGE_BODY_BYTES + b'"}}'
    assert_refused(gw.client.post("/v1/training-jobs", content=big, headers=ops), 413, "body_too_large")
