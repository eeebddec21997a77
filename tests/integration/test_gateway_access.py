"""Every route with every kind of caller: nothing leaks across tenants, courses or roles.

Tenants acme (A) and globex (B) both have a learner called `learner-1`; acme's learner has
submissions in courses c1 and c2, globex's in c1. Teachers see only their tenant's courses in
scope; an lms key only its tenant; ops everything. Runs on SQLite and Postgres.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from db.accounts import hash_key
from db.models import ApiKey
from tests.integration.gateway_support import T0, add_scored, make_gateway

REDIS_DB = 11
SCORES = {"accuracy": 7, "fluency": 8, "prosody": 6, "completeness": 10, "total": 7}
READERS = ["lms_a", "lms_b", "teacher_a_c1", "teacher_a_c2", "teacher_b_c1", "ops"]
ALL = [*READERS, "revoked", None]


@pytest.fixture
def world(migrated_url: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    g = make_gateway(migrated_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    ids = {
        "A-c1": add_scored(g.sessions, g.a.id, learner_id="learner-1", course_id="c1", lms_id="A-c1-sub", at=T0,
                           scores=SCORES),
        "A-c2": add_scored(g.sessions, g.a.id, learner_id="learner-1", course_id="c2", lms_id="A-c2-sub", at=T0,
                           scores=SCORES),
        "B-c1": add_scored(g.sessions, g.b.id, learner_id="learner-1", course_id="c1", lms_id="B-c1-sub", at=T0,
                           scores=SCORES),
    }
    yield g, ids
    g.close()


# Which of the three submissions each caller may see.
VISIBLE = {
    "lms_a": {"A-c1", "A-c2"},
    "lms_b": {"B-c1"},
    "teacher_a_c1": {"A-c1"},
    "teacher_a_c2": {"A-c2"},
    "teacher_b_c1": {"B-c1"},
    "ops": {"A-c1", "A-c2", "B-c1"},
}


def leaked(text: str, ids: dict[str, uuid.UUID], allowed: set[str]) -> set[str]:
    """Names of submissions outside `allowed` whose id or LMS id appears in the response."""
    return {name for name, sid in ids.items() if name not in allowed and (str(sid) in text or f"{name}-sub" in text)}


def test_every_route_with_every_caller(world) -> None:
    g, ids = world
    a, b = str(g.a.id), str(g.b.id)
    checked = 0

    # -- POST /v1/submissions (signed with acme's secret) --------------------------------
    expected_post = {"lms_a": 202, "lms_b": 401, "teacher_a_c1": 403, "teacher_a_c2": 403, "teacher_b_c1": 403,
                     "ops": 403, "revoked": 401, None: 401}
    for who in ALL:
        resp = g.post(g.payload(learner_id="poster", submission_id=f"p-{who}"), key=who)
        assert resp.status_code == expected_post[who], (who, resp.text)
        checked += 1
    assert [s.lms_submission_id for s in g.submissions() if s.learner_id == "poster"] == ["p-lms_a"]

    # -- GET /v1/submissions/{id} ----------------------------------------------------------
    for who in ALL:
        for name, sid in ids.items():
            resp = g.get(f"/v1/submissions/{sid}", who)
            if who in (None, "revoked"):
                want = 401
            else:
                want = 200 if name in VISIBLE[who] else 404
            assert resp.status_code == want, (who, name, resp.text)
            if want == 404:
                assert resp.json()["detail"]["code"] == "not_found"  # same answer as a missing one
                assert str(sid) not in resp.text
            checked += 1
        missing = g.get(f"/v1/submissions/{uuid.uuid4()}", who)
        garbage = g.get("/v1/submissions/not-a-uuid", who)
        want = 401 if who in (None, "revoked") else 404
        assert missing.status_code == garbage.status_code == want, who
        checked += 2

    # -- GET /v1/learners/{id}/scores ------------------------------------------------------
    for who in ALL:
        resp = g.get("/v1/learners/learner-1/scores", who)
        if who in (None, "revoked"):
            assert resp.status_code == 401 and resp.json()["detail"]["code"] in ("missing_api_key", "invalid_api_key")
            continue
        assert resp.status_code == 200, (who, resp.text)
        seen = {item["submission_id"].removesuffix("-sub") for item in resp.json()["items"]}
        assert seen == VISIBLE[who], who
        assert not leaked(resp.text, ids, VISIBLE[who]), who
        assert resp.json()["aggregates"]["total"]["n"] == len(VISIBLE[who])
        checked += 1

    course_c1 = {"lms_a": {"A-c1"}, "lms_b": {"B-c1"}, "teacher_a_c1": {"A-c1"}, "teacher_a_c2": None,
                 "teacher_b_c1": {"B-c1"}, "ops": {"A-c1", "B-c1"}}
    for who, allowed in course_c1.items():
        resp = g.get("/v1/learners/learner-1/scores", who, course_id="c1")
        if allowed is None:
            assert resp.status_code == 403 and resp.json()["detail"]["code"] == "course_not_in_scope", who
        else:
            assert resp.status_code == 200
            assert {i["submission_id"].removesuffix("-sub") for i in resp.json()["items"]} == allowed, who
            assert not leaked(resp.text, ids, allowed), who
        checked += 1

    for who in READERS:  # asking for the other tenant: 403 unless ops (or that tenant's own key)
        resp = g.get("/v1/learners/learner-1/scores", who, tenant_id=b)
        if who in ("ops", "lms_b", "teacher_b_c1"):
            assert resp.status_code == 200
            assert {i["tenant_id"] for i in resp.json()["items"]} == {b}, who
        else:
            assert resp.status_code == 403 and resp.json()["detail"]["code"] == "tenant_not_allowed", who
            assert not leaked(resp.text, ids, set()), who
        checked += 1

    # -- GET /v1/courses/{id}/learners -----------------------------------------------------
    tenants_seen = {
        ("c1", "lms_a"): {a}, ("c1", "lms_b"): {b}, ("c1", "teacher_a_c1"): {a}, ("c1", "teacher_a_c2"): None,
        ("c1", "teacher_b_c1"): {b}, ("c1", "ops"): {a, b},
        ("c2", "lms_a"): {a}, ("c2", "lms_b"): set(), ("c2", "teacher_a_c1"): None, ("c2", "teacher_a_c2"): {a},
        ("c2", "teacher_b_c1"): None, ("c2", "ops"): {a},
    }
    for (course, who), want in tenants_seen.items():
        resp = g.get(f"/v1/courses/{course}/learners", who)
        if want is None:
            assert resp.status_code == 403 and resp.json()["detail"]["code"] == "course_not_in_scope", (course, who)
        else:
            assert resp.status_code == 200, (course, who, resp.text)
            assert {row["tenant_id"] for row in resp.json()["learners"]} == want, (course, who)
            foreign = {a, b} - want
            assert not any(t in resp.text for t in foreign), (course, who)
        checked += 1
    for who in (None, "revoked"):
        for course in ("c1", "c2"):
            assert g.get(f"/v1/courses/{course}/learners", who).status_code == 401
            checked += 1
    ops_b = g.get("/v1/courses/c1/learners", "ops", tenant_id=b)
    assert {row["tenant_id"] for row in ops_b.json()["learners"]} == {b}
    assert g.get("/v1/courses/c1/learners", "lms_a", tenant_id=b).status_code == 403

    # -- operational routes are open and carry no tenant data ------------------------------
    for path in ("/healthz", "/readyz", "/metrics"):
        for who in ALL:
            resp = g.get(path, who)
            assert resp.status_code == 200, (path, who)
            assert not leaked(resp.text, ids, set())
            assert a not in resp.text and b not in resp.text
            checked += 1
    assert checked >= 100  # the loops above really ran


def test_401_says_how_to_authenticate(world) -> None:
    g, ids = world
    resp = g.get(f"/v1/submissions/{ids['A-c1']}", None)
    assert resp.status_code == 401
    assert resp.json()["detail"]["code"] == "missing_api_key" and "X-API-Key" in resp.json()["detail"]["message"]
    assert resp.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
    revoked = g.get(f"/v1/submissions/{ids['A-c1']}", "revoked")
    assert revoked.status_code == 401 and revoked.json()["detail"]["code"] == "invalid_api_key"


def test_last_used_is_recorded_at_most_once_a_minute(world) -> None:
    g, ids = world

    def last_used():
        with g.sessions() as s:
            return s.query(ApiKey).filter(ApiKey.key_hash == hash_key(g.keys["teacher_a_c1"])).one().last_used_at

    assert last_used() is None
    assert g.get(f"/v1/submissions/{ids['A-c1']}", "teacher_a_c1").status_code == 200
    first = last_used()
    assert first is not None
    time.sleep(0.05)
    assert g.get(f"/v1/submissions/{ids['A-c1']}", "teacher_a_c1").status_code == 200
    assert last_used() == first


def test_openapi_documents_the_routes(world) -> None:
    g, _ = world
    resp = g.client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    assert {"/v1/submissions", "/v1/submissions/{submission_id}", "/v1/learners/{learner_id}/scores",
            "/v1/courses/{course_id}/learners", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/v1/submissions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "reference_text" in body["properties"] and "$defs" not in json.dumps(body)
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    assert g.client.get("/docs").status_code == 200
