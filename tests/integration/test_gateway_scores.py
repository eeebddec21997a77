"""Score history, pagination, filters, aggregates, course summaries and the full result shape.

Rows are written directly through the session (as the worker would), then read through the API;
every number is checked against a computation in Python. Runs on SQLite and Postgres.
"""

from __future__ import annotations

import statistics
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from db.engine import session_scope
from db.models import PhoneScore, SentenceScore, Submission, SubmissionStatus, WordScore
from tests.integration.gateway_support import T0, Gateway, add_scored, make_gateway

REDIS_DB = 12
ASPECTS = ("accuracy", "fluency", "prosody", "completeness", "total")


def full(total: int, acc: int | None = None) -> dict[str, int]:
    acc = total if acc is None else acc
    return {"accuracy": acc, "fluency": min(10, total + 1), "prosody": max(0, total - 1), "completeness": 10,
            "total": total}


@pytest.fixture
def gw(migrated_url: str, s3_server: str, s3_bucket: str, tmp_path: Path):
    g = make_gateway(migrated_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


@pytest.fixture
def history(gw: Gateway):
    """Learner L of acme: 12 submissions, four of them at one instant (ties across a page edge)."""
    rows: list[dict] = []

    def add(n: int, day: float, course: str, status=SubmissionStatus.scored, scores=None, assignment=None):
        at = T0 + timedelta(days=day)
        sid = add_scored(gw.sessions, gw.a.id, learner_id="L", course_id=course, lms_id=f"L-{n}", at=at,
                         scores=scores, status=status, assignment_id=assignment)
        rows.append({"id": sid, "n": n, "at": at, "course": course, "status": status, "scores": scores,
                     "assignment": assignment})

    add(0, 0, "c1", scores=full(5))
    add(1, 1, "c1", scores=full(6, acc=4))
    add(2, 2, "c1", status=SubmissionStatus.failed)
    for n in (3, 4, 5, 6):  # same instant
        add(n, 3, "c1", scores=full(4 + n))
    add(7, 4, "c1", scores={"total": 3})  # a sentence_total request: one aspect only
    add(8, 5, "c2", scores=full(9), assignment="a2")
    add(9, 6, "c2", status=SubmissionStatus.queued, assignment="a2")
    add(10, 7, "c2", scores=full(2), assignment="a3")
    add(11, 8, "c1", scores=full(10))
    # the same learner id at another tenant never shows up for acme's key
    add_scored(gw.sessions, gw.b.id, learner_id="L", course_id="c1", lms_id="other-tenant", at=T0, scores=full(1))
    return rows


def newest_first(rows: list[dict]) -> list[str]:
    return [str(r["id"]) for r in sorted(rows, key=lambda r: (r["at"], str(r["id"])), reverse=True)]


def expected_aggregates(rows: list[dict]) -> dict[str, dict]:
    out = {}
    scored = sorted((r for r in rows if r["status"] is SubmissionStatus.scored), key=lambda r: (r["at"], str(r["id"])))
    for aspect in ASPECTS:
        ys = [r["scores"][aspect] for r in scored if r["scores"].get(aspect) is not None]
        if not ys:
            out[aspect] = {"n": 0, "mean": None, "latest": None, "trend": None}
            continue
        trend = statistics.linear_regression(range(len(ys)), ys).slope if len(ys) >= 2 else None
        out[aspect] = {"n": len(ys), "mean": statistics.fmean(ys), "latest": float(ys[-1]), "trend": trend}
    return out


def assert_aggregates(got: dict, want: dict) -> None:
    assert set(got) == set(ASPECTS)
    for aspect in ASPECTS:
        g, w = got[aspect], want[aspect]
        assert g["n"] == w["n"], aspect
        for k in ("mean", "latest", "trend"):
            if w[k] is None:
                assert g[k] is None, (aspect, k)
            else:
                assert g[k] == pytest.approx(w[k], abs=1e-9), (aspect, k, g[k], w[k])


def pages(gw: Gateway, limit: int, **params) -> list[dict]:
    out, cursor, seen = [], None, 0
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        resp = gw.get("/v1/learners/L/scores", "lms_a", **query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["items"]) <= limit
        out.append(body)
        cursor = body["next_cursor"]
        seen += 1
        if cursor is None:
            return out
        assert seen < 50


def test_history_is_newest_first_and_pages_without_gaps(gw: Gateway, history: list[dict]) -> None:
    whole = gw.get("/v1/learners/L/scores", "lms_a", limit=100).json()
    assert [i["id"] for i in whole["items"]] == newest_first(history)
    assert whole["next_cursor"] is None and whole["learner_id"] == "L"
    assert "other-tenant" not in str(whole)

    for limit in (1, 3, 4, 5):  # page edges fall inside the four-way tie for some of these
        got = pages(gw, limit)
        ids = [i["id"] for p in got for i in p["items"]]
        assert ids == newest_first(history), limit
        assert len(ids) == len(set(ids))
        # aggregates describe the whole window on every page
        assert all(p["aggregates"] == got[0]["aggregates"] for p in got)
    assert pages(gw, 12)[0]["next_cursor"] is None  # exactly one full page: no empty second page


def test_history_item_shape(gw: Gateway, history: list[dict]) -> None:
    items = {i["submission_id"]: i for i in gw.get("/v1/learners/L/scores", "lms_a", limit=100).json()["items"]}
    scored = items["L-1"]
    assert scored["status"] == "scored" and scored["course_id"] == "c1" and scored["granularity"] == "sentence"
    assert scored["sentence"]["accuracy"] == {"value": 4, "expected": 4.25}
    assert scored["created_at"].startswith("2026-01-02T12:00:00") and scored["created_at"].endswith("Z")
    assert scored["error"] is None
    failed = items["L-2"]
    assert failed["sentence"] is None and failed["error"] == {"code": "audio_silent", "message": "no speech energy"}
    assert items["L-7"]["sentence"]["fluency"] is None and items["L-7"]["sentence"]["total"]["value"] == 3


def test_aggregates_match_a_hand_computation(gw: Gateway, history: list[dict]) -> None:
    body = gw.get("/v1/learners/L/scores", "lms_a").json()
    want = expected_aggregates(history)
    assert_aggregates(body["aggregates"], want)
    # spot-check the hand computation itself for `total`: values 5,6,7,8,9,10,3,9,2,10 in order
    assert want["total"]["n"] == 10 and want["total"]["mean"] == pytest.approx(6.9)
    assert want["accuracy"]["n"] == 9  # the sentence_total submission has no accuracy
    assert body["trend_unit"] == "points per scored submission"


def test_filters(gw: Gateway, history: list[dict]) -> None:
    def check(params: dict, keep) -> None:
        rows = [r for r in history if keep(r)]
        body = gw.get("/v1/learners/L/scores", "lms_a", limit=100, **params).json()
        assert [i["id"] for i in body["items"]] == newest_first(rows), params
        assert_aggregates(body["aggregates"], expected_aggregates(rows))

    check({"course_id": "c2"}, lambda r: r["course"] == "c2")
    check({"assignment_id": "a2"}, lambda r: r["assignment"] == "a2")
    check({"status": "failed"}, lambda r: r["status"] is SubmissionStatus.failed)
    check({"status": "scored", "course_id": "c1"},
          lambda r: r["status"] is SubmissionStatus.scored and r["course"] == "c1")
    since, until = T0 + timedelta(days=3), T0 + timedelta(days=7)
    check({"since": since.isoformat(), "until": until.isoformat()}, lambda r: since <= r["at"] < until)
    # naive datetimes are UTC; other offsets are converted
    check({"since": "2026-01-04T12:00:00"}, lambda r: r["at"] >= since)
    check({"until": "2026-01-04T13:00:00+01:00"}, lambda r: r["at"] < since)
    # paging inside a filter
    got = pages(gw, 2, course_id="c1")
    assert [i["id"] for p in got for i in p["items"]] == newest_first([r for r in history if r["course"] == "c1"])


def test_bad_query_parameters(gw: Gateway, history: list[dict]) -> None:
    bad_cursor = gw.get("/v1/learners/L/scores", "lms_a", cursor="not-a-cursor")
    assert bad_cursor.status_code == 400 and bad_cursor.json()["detail"]["code"] == "invalid_cursor"
    assert gw.get("/v1/learners/L/scores", "lms_a", limit=101).status_code == 422
    assert gw.get("/v1/learners/L/scores", "lms_a", limit=0).status_code == 422
    assert gw.get("/v1/learners/L/scores", "lms_a", status="done").status_code == 422
    assert gw.get("/v1/learners/L/scores", "lms_a", since="yesterday").status_code == 422
    empty = gw.get("/v1/learners/nobody/scores", "lms_a").json()
    assert empty["items"] == [] and empty["next_cursor"] is None and empty["aggregates"]["total"]["n"] == 0


def test_course_summary(gw: Gateway, history: list[dict]) -> None:
    add_scored(gw.sessions, gw.a.id, learner_id="M", course_id="c1", lms_id="M-0", at=T0, scores=full(4))
    add_scored(gw.sessions, gw.a.id, learner_id="M", course_id="c1", lms_id="M-1", at=T0 + timedelta(days=9),
               scores=full(6, acc=8))
    add_scored(gw.sessions, gw.a.id, learner_id="N", course_id="c1", lms_id="N-0", at=T0,
               status=SubmissionStatus.failed)

    body = gw.get("/v1/courses/c1/learners", "lms_a").json()
    assert body["course_id"] == "c1"
    by_learner = {row["learner_id"]: row for row in body["learners"]}
    assert list(by_learner) == ["L", "M"]  # N has nothing scored; other tenant's L is not here

    c1_scored = sorted((r for r in history if r["course"] == "c1" and r["status"] is SubmissionStatus.scored),
                       key=lambda r: (r["at"], str(r["id"])))
    L = by_learner["L"]
    assert L["count"] == len(c1_scored) == 8
    for aspect in ASPECTS:
        vals = [r["scores"][aspect] for r in c1_scored if r["scores"].get(aspect) is not None]
        assert L["mean"][aspect] == pytest.approx(statistics.fmean(vals)), aspect
        assert L["latest"][aspect] == c1_scored[-1]["scores"][aspect], aspect
    assert L["latest_at"].startswith("2026-01-09T12:00:00")

    M = by_learner["M"]
    assert M["count"] == 2 and M["latest"]["accuracy"] == 8 and M["mean"]["accuracy"] == pytest.approx(6.0)
    assert M["mean"]["total"] == pytest.approx(5.0) and M["latest"]["total"] == 6

    ops = gw.get("/v1/courses/c1/learners", "ops").json()
    assert {(r["tenant_id"], r["learner_id"]) for r in ops["learners"]} == {
        (str(gw.a.id), "L"), (str(gw.a.id), "M"), (str(gw.b.id), "L")}
    assert gw.get("/v1/courses/empty/learners", "lms_a").json() == {"course_id": "empty", "learners": []}


def test_full_result_at_every_granularity(gw: Gateway) -> None:
    sid = uuid.uuid4()
    with session_scope(gw.sessions) as s:
        sub = Submission(
            id=sid, tenant_id=gw.a.id, lms_submission_id="full-1", learner_id="L", course_id="c1",
            assignment_id="a1", reference_text="We call", audio_uri="s3://b/k.wav", granularity="full",
            status=SubmissionStatus.scored, attempts=1, created_at=T0, started_at=T0 + timedelta(seconds=1),
            finished_at=T0 + timedelta(seconds=3), model_ms=812.5, adapter_version="v3", model_name="tiny",
            engine="qwen2-audio", model_version="v3",
        )
        sub.sentence = SentenceScore(accuracy=8, accuracy_expected=7.6, fluency=9, fluency_expected=8.9,
                                     prosody=7, prosody_expected=7.2, completeness=10, completeness_expected=9.9,
                                     total=8, total_expected=8.1)
        we = WordScore(position=0, text="WE", accuracy=9, accuracy_expected=8.8, stress=10, stress_expected=9.7,
                       total=9, total_expected=8.9)
        we.phones = [PhoneScore(position=0, phone="W", accuracy=10, accuracy_expected=9.5, submission_id=sid),
                     PhoneScore(position=1, phone="IY1", accuracy=5, accuracy_expected=6.0, submission_id=sid)]
        call = WordScore(position=1, text="CALL", accuracy=6, accuracy_expected=6.4, stress=5, stress_expected=5.5,
                         total=6, total_expected=6.2)
        call.phones = [PhoneScore(position=0, phone="K", accuracy=10, accuracy_expected=10.0, submission_id=sid)]
        sub.words = [we, call]
        s.add(sub)

    resp = gw.get(f"/v1/submissions/{sid}", "teacher_a_c1")
    assert resp.status_code == 200
    body = resp.json()
    assert body == {
        "id": str(sid), "submission_id": "full-1", "tenant_id": str(gw.a.id), "learner_id": "L",
        "course_id": "c1", "assignment_id": "a1", "reference_text": "We call", "granularity": "full",
        "status": "scored", "error": None, "attempts": 1, "adapter_version": "v3", "model_name": "tiny",
        "engine": "qwen2-audio", "model_version": "v3",
        "timings": {"created_at": "2026-01-01T12:00:00Z", "started_at": "2026-01-01T12:00:01Z",
                    "finished_at": "2026-01-01T12:00:03Z", "model_ms": 812.5},
        "scales": {"sentence": "0-10", "word": "0-10 (stress: 5 or 10)",
                   "phone": "0-10 (speechocean762's 0-2 x 5: 0 wrong, 5 heavy accent, 10 right)"},
        "delivery": None,  # no callback row: scored here without the worker's outbox
        "scores": {
            "sentence": {"accuracy": {"value": 8, "expected": 7.6}, "fluency": {"value": 9, "expected": 8.9},
                         "prosody": {"value": 7, "expected": 7.2},
                         "completeness": {"value": 10, "expected": 9.9}, "total": {"value": 8, "expected": 8.1}},
            "words": [
                {"position": 0, "text": "WE", "accuracy": {"value": 9, "expected": 8.8},
                 "stress": {"value": 10, "expected": 9.7}, "total": {"value": 9, "expected": 8.9},
                 "phones": [{"phone": "W", "accuracy": {"value": 10, "expected": 9.5}},
                            {"phone": "IY1", "accuracy": {"value": 5, "expected": 6.0}}]},
                {"position": 1, "text": "CALL", "accuracy": {"value": 6, "expected": 6.4},
                 "stress": {"value": 5, "expected": 5.5}, "total": {"value": 6, "expected": 6.2},
                 "phones": [{"phone": "K", "accuracy": {"value": 10, "expected": 10.0}}]},
            ],
        },
    }
