"""Faults the fleet must survive: a killed worker child, a flushed broker, duplicate webhooks, bad
audio, forged or stale webhooks. Postgres is the record; nothing is lost or scored twice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from db.models import SentenceScore, Submission, SubmissionStatus, WordScore
from tests.conftest import SAMPLE_DIR
from tests.helpers_webhooks import signed_headers

pytestmark = pytest.mark.slow


def _clip(item: dict) -> bytes:
    return (SAMPLE_DIR / item["audio"]).read_bytes()


def _submit_items(fleet, items) -> dict[str, dict]:
    ids = {}
    for item in items:
        uri = fleet.upload(f"in/{item['utt_id']}.flac", _clip(item))
        r = fleet.submit(fleet.submission_body(item, uri))
        assert r.status_code == 202, r.text
        ids[r.json()["id"]] = item
    return ids


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _assert_one_score_set(fleet, ids: dict[str, dict]) -> None:
    with fleet.sessions() as s:
        for sub_id, item in ids.items():
            sid = uuid.UUID(sub_id)
            assert s.scalar(select(func.count()).select_from(SentenceScore).where(SentenceScore.submission_id == sid)) == 1
            n_words = s.scalar(select(func.count()).select_from(WordScore).where(WordScore.submission_id == sid))
            assert n_words == len(item["words"])


def test_worker_child_killed_mid_job_is_rescored_once(fleet_factory, sample_items) -> None:
    fleet = fleet_factory("redis")
    ids = _submit_items(fleet, sample_items[:16])
    parent = fleet.procs["score"].pid
    deadline = time.monotonic() + 120
    while True:  # wait until a batch is being scored, then kill the child doing it
        with fleet.sessions() as s:
            running = s.scalar(select(func.count()).select_from(Submission)
                               .where(Submission.status == SubmissionStatus.running))
        if running:
            break
        assert time.monotonic() < deadline, fleet.log_tail()
        time.sleep(0.05)
    children = _children(parent)
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    done = fleet.wait_finished(list(ids), timeout_s=300)
    assert all(d.status == SubmissionStatus.scored for d in done.values()), {
        i: (d.status, d.error_code) for i, d in done.items()}
    assert max(d.attempts for d in done.values()) == 2  # the killed batch ran again
    _assert_one_score_set(fleet, ids)


def test_flushed_redis_loses_nothing(fleet_factory, sample_items) -> None:
    fleet = fleet_factory("redis", start_worker=False)
    ids = _submit_items(fleet, sample_items[16:22])
    broker = redis.Redis.from_url(fleet.env["APA_BROKER_URL"])
    assert broker.llen("score") >= len(ids)
    broker.flushdb()
    assert broker.llen("score") == 0
    fleet.start_score_worker()
    done = fleet.wait_finished(list(ids), timeout_s=300)
    assert all(d.status == SubmissionStatus.scored for d in done.values())
    _assert_one_score_set(fleet, ids)


def test_same_webhook_five_times_concurrently(fleet_factory, sample_items) -> None:
    fleet = fleet_factory("redis", start_worker=False)
    item = sample_items[30]
    uri = fleet.upload("in/dup.flac", _clip(item))
    raw = json.dumps(fleet.submission_body(item, uri, lms_id="dup-1")).encode()
    headers = signed_headers(fleet.tenant_secret, raw, msg_id="msg_dup_1")
    headers.update({"X-API-Key": fleet.lms_key, "content-type": "application/json"})
    import httpx

    results: list[httpx.Response] = []
    barrier = threading.Barrier(5)

    def send() -> None:
        barrier.wait()
        results.append(httpx.post(f"{fleet.base_url}/v1/submissions", content=raw, headers=headers, timeout=30))

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 200, 200, 200, 202]
    assert len({r.json()["id"] for r in results}) == 1
    assert fleet.count(Submission) == 1


def test_bad_audio_and_missing_object_fail_once_with_their_code(fleet_factory, sample_items) -> None:
    fleet = fleet_factory("redis", start_worker=False)
    item = sample_items[40]
    garbage_uri = fleet.upload("in/garbage.flac", b"this is not audio at all" * 100)
    missing_uri = fleet.upload("in/soon-gone.flac", _clip(item))
    r1 = fleet.submit(fleet.submission_body(item, garbage_uri))
    r2 = fleet.submit(fleet.submission_body(item, missing_uri))
    assert r1.status_code == r2.status_code == 202
    fleet.s3.delete_object(Bucket=fleet.bucket, Key="in/soon-gone.flac")  # gone before a worker fetches it
    fleet.start_score_worker()
    done = fleet.wait_finished([r1.json()["id"], r2.json()["id"]], timeout_s=120)
    garbage, missing = done[r1.json()["id"]], done[r2.json()["id"]]
    assert (garbage.status, garbage.error_code, garbage.attempts) == (SubmissionStatus.failed, "audio_undecodable", 1)
    assert (missing.status, missing.error_code, missing.attempts) == (SubmissionStatus.failed, "object_not_found", 1)
    deadline = time.monotonic() + 30  # failures are delivered to the LMS too
    while len(fleet.receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(c["payload"]["data"]["error"]["code"] for c in fleet.receiver.received) == [
        "audio_undecodable", "object_not_found"]


def test_forged_stale_and_unknown_webhooks_write_nothing(fleet_factory, sample_items) -> None:
    fleet = fleet_factory("redis", start_worker=False)
    item = sample_items[41]
    uri = fleet.upload("in/x.flac", _clip(item))
    body = json.dumps(fleet.submission_body(item, uri)).encode()
    import httpx

    def post(raw: bytes, headers: dict) -> httpx.Response:
        return httpx.post(f"{fleet.base_url}/v1/submissions", content=raw,
                          headers={**headers, "content-type": "application/json"}, timeout=30)

    good = signed_headers(fleet.tenant_secret, body)
    tampered = post(body.replace(b"course-1", b"course-2"), {**good, "X-API-Key": fleet.lms_key})
    stale = post(body, {**signed_headers(fleet.tenant_secret, body, timestamp=int(time.time()) - 360),
                        "X-API-Key": fleet.lms_key})
    unknown_key = post(body, {**good, "X-API-Key": "apa_not-a-key"})
    unknown_tenant = httpx.post(f"{fleet.base_url}/v1/submissions?tenant=nobody", content=body,
                                headers={**good, "content-type": "application/json"}, timeout=30)
    for r in (tampered, stale, unknown_key, unknown_tenant):
        assert r.status_code == 401, r.text
    assert fleet.count(Submission) == 0
