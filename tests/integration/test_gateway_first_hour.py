"""Issue 11 through the real app: look-up by the LMS's id, a failing callback made visible, one
score scale stated everywhere, UTC timestamps with offset, and signed report links."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from api_gateway.signed_links import signed_url
from db.engine import session_scope
from db.models import Adapter, AdapterStatus, Delivery, DeliveryStatus, JobStatus, TrainingJob
from db.results import SCALES
from tests.integration.gateway_support import T0, Gateway, add_scored, make_gateway

REDIS_DB = int(os.environ.get("APA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[1])


@pytest.fixture
def gw(migrated_url: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    g = make_gateway(migrated_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


def test_an_lms_finds_its_submission_by_its_own_id_within_its_tenant(gw: Gateway) -> None:
    mine = add_scored(gw.sessions, gw.a.id, learner_id="stu-7", course_id="c1", lms_id="lms-42", at=T0,
                      scores={"total": 8})
    theirs = add_scored(gw.sessions, gw.b.id, learner_id="stu-9", course_id="c1", lms_id="lms-42", at=T0)
    r = gw.get("/v1/submissions", "lms_a", lms_submission_id="lms-42")
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [str(mine)]
    assert r.json()["items"][0]["submission_id"] == "lms-42"
    assert [i["id"] for i in gw.get("/v1/submissions", "lms_b", lms_submission_id="lms-42").json()["items"]] == [str(theirs)]
    assert gw.get("/v1/submissions", "teacher_a_c2", lms_submission_id="lms-42").json()["items"] == []
    assert {i["id"] for i in gw.get("/v1/submissions", "ops", lms_submission_id="lms-42").json()["items"]} == {
        str(mine), str(theirs)}
    assert gw.get("/v1/submissions", "lms_a", lms_submission_id="lms-404").json()["items"] == []
    assert gw.get("/v1/submissions", None, lms_submission_id="lms-42").status_code == 401
    assert gw.get("/v1/submissions", "lms_a").status_code == 422  # the id is required


def test_a_failing_callback_is_visible_on_the_submission_and_in_metrics(gw: Gateway) -> None:
    sid = add_scored(gw.sessions, gw.a.id, learner_id="stu-7", course_id="c1", lms_id="lms-1", at=T0, scores={"total": 7})
    assert gw.get(f"/v1/submissions/{sid}", "lms_a").json()["delivery"] is None
    with session_scope(gw.sessions) as s:
        s.add(Delivery(submission_id=sid, tenant_id=gw.a.id, url="https://acme.example/cb", event_type="result",
                       payload={}, status=DeliveryStatus.pending, attempts=7,
                       last_error="ConnectError: [Errno 111] Connection refused"))
        other = add_scored(gw.sessions, gw.a.id, learner_id="stu-8", course_id="c1", lms_id="lms-2", at=T0)
        s.add(Delivery(submission_id=other, tenant_id=gw.a.id, url="https://acme.example/cb", event_type="result",
                       payload={}, status=DeliveryStatus.failed, attempts=3, last_error="HTTP 410: gone"))
    body = gw.get(f"/v1/submissions/{sid}", "lms_a").json()
    d = body["delivery"]
    assert (d["status"], d["failing"], d["attempts"]) == ("pending", True, 7)
    assert d["last_error"].startswith("ConnectError")
    assert d["next_attempt_at"].endswith("Z")
    metrics = gw.client.get("/metrics").text
    assert 'apa_callback_deliveries{state="retrying"} 1.0' in metrics
    assert 'apa_callback_deliveries{state="failed"} 1.0' in metrics
    assert "apa_callback_deliveries_failing 2.0" in metrics


def test_one_scale_per_level_in_the_response_and_the_openapi_schema(gw: Gateway) -> None:
    sid = add_scored(gw.sessions, gw.a.id, learner_id="stu-7", course_id="c1", lms_id="lms-3", at=T0, scores={"total": 7})
    assert gw.get(f"/v1/submissions/{sid}", "lms_a").json()["scales"] == SCALES
    assert SCALES["phone"].startswith("0-10")
    schemas = gw.client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Score"]["properties"]["value"]["maximum"] == 10
    assert "0-10" in schemas["PhoneOut"]["properties"]["accuracy"]["description"]
    assert "0-2" in schemas["PhoneOut"]["properties"]["accuracy"]["description"]
    assert "scales" in schemas["SubmissionOut"]["properties"] and "delivery" in schemas["SubmissionOut"]["properties"]
    lookup = gw.client.get("/openapi.json").json()["paths"]["/v1/submissions"]["get"]
    assert [p["name"] for p in lookup["parameters"]] == ["lms_submission_id"]


def test_lti_page_colours_phones_on_the_api_scale() -> None:
    from api_gateway.lti.pages import recording_page

    page = recording_page(title="t", reference_text="WE", upload_url="/u", user_name=None)
    assert "cls(p.accuracy.value, 10)" in page and "phones (0-10)" in page


def _aware(text: str | None) -> bool:
    return text is not None and datetime.fromisoformat(text.replace("Z", "+00:00")).utcoffset() is not None


def test_every_timestamp_has_an_offset(gw: Gateway) -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)  # what SQLite hands back
    with session_scope(gw.sessions) as s:
        job = TrainingJob(trigger="manual", params={}, status=JobStatus.succeeded, started_at=naive,
                          finished_at=naive, report_uri=f"s3://{gw.bucket}/reports/j/report.md")
        s.add(job)
        s.flush()
        s.add(Adapter(version="v-test", base_model="tiny", uri="s3://x/a/", status=AdapterStatus.candidate,
                      metrics={}, training_job_id=job.id, created_at=naive))
        job_id = job.id
    add_scored(gw.sessions, gw.a.id, learner_id="stu-7", course_id="c1", lms_id="lms-4",
               at=datetime(2026, 1, 1, 12), scores={"total": 7})
    j = gw.get(f"/v1/training-jobs/{job_id}", "ops").json()
    assert all(_aware(j[k]) for k in ("created_at", "started_at", "finished_at")), j
    a = next(x for x in gw.get("/v1/adapters", "ops").json() if x["version"] == "v-test")
    assert _aware(a["created_at"])
    hist = gw.get("/v1/learners/stu-7/scores", "teacher_a_c1", course_id="c1").json()
    assert _aware(hist["items"][0]["created_at"])
    course = gw.get("/v1/courses/c1/learners", "teacher_a_c1").json()
    assert _aware(course["learners"][0]["latest_at"])
    from db.models import LtiGrade, LtiGradeStatus, LtiRegistration

    sid = add_scored(gw.sessions, gw.a.id, learner_id="stu-8", course_id="c1", lms_id="lms-5", at=T0, scores={"total": 6})
    with session_scope(gw.sessions) as s:
        reg = LtiRegistration(tenant_id=gw.a.id, issuer="https://lms.example", client_id="c", deployment_ids=["d"],
                              auth_login_url="https://lms.example/a", auth_token_url="https://lms.example/t",
                              keyset_url="https://lms.example/k")
        s.add(reg)
        s.flush()
        s.add(LtiGrade(submission_id=sid, registration_id=reg.id, lineitem_url="https://lms.example/li", user_id="u",
                       status=LtiGradeStatus.delivered, delivered_at=naive))
    [grade] = gw.get("/v1/lti/grades", "ops").json()
    assert _aware(grade["delivered_at"]), grade


def test_report_links_open_without_a_key_until_they_expire(gw: Gateway) -> None:
    with session_scope(gw.sessions) as s:
        job = TrainingJob(trigger="manual", params={}, status=JobStatus.succeeded,
                          report_uri=f"s3://{gw.bucket}/reports/j1/report.md")
        s.add(job)
        s.flush()
        job_id = job.id
    gw.store.put(f"s3://{gw.bucket}/reports/j1/report.md", b"# report")
    gw.store.put(f"s3://{gw.bucket}/reports/j1/report.png", b"\x89PNG fake")
    view = gw.get(f"/v1/training-jobs/{job_id}", "ops").json()
    for field, content in (("report_url", b"# report"), ("plot_url", b"\x89PNG fake")):
        url = view[field].removeprefix(gw.settings.public_base_url)
        r = gw.client.get(url)  # no API key header: a browser
        assert r.status_code == 200, r.text
        assert r.content == content
    png = view["plot_url"].removeprefix(gw.settings.public_base_url)
    assert gw.client.get(png.replace("signature=", "signature=0")).json()["detail"]["code"] == "bad_signature"
    md_as_png = view["report_url"].removeprefix(gw.settings.public_base_url).replace("report.md", "report.png")
    assert gw.client.get(md_as_png).status_code == 401  # a link opens only what it was signed for
    old = signed_url(gw.settings, f"/v1/training-jobs/{job_id}/report.png", now=time.time() - 3600)
    r = gw.client.get(old.removeprefix(gw.settings.public_base_url))
    assert (r.status_code, r.json()["detail"]["code"]) == (401, "link_expired")
    plain = f"/v1/training-jobs/{job_id}/report.png"
    assert gw.client.get(plain).status_code == 401
    assert gw.get(plain, "teacher_a_c1").status_code == 403
    assert gw.get(plain, "ops").content == b"\x89PNG fake"
    assert gw.get(f"/v1/training-jobs/{uuid.uuid4()}/report.png", "ops").status_code == 404


def test_a_non_ascii_signature_is_refused_not_a_crash(gw: Gateway) -> None:
    r = gw.client.get(f"/v1/training-jobs/{uuid.uuid4()}/report.png", params={"expires": 1, "signature": "é?"})
    assert (r.status_code, r.json()["detail"]["code"]) == (401, "bad_signature")
