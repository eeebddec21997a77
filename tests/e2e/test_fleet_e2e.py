"""The main path end to end: signed webhooks -> gateway -> Celery score queue -> worker -> Postgres
-> signed callbacks, with real processes, brokers, S3 (moto) and the tiny model."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.models import PhoneScore, SentenceScore, Submission, WordScore

pytestmark = pytest.mark.slow


def _check_complete(fleet, sub: Submission, item: dict) -> None:
    with fleet.sessions() as s:
        sentence = s.get(SentenceScore, sub.id)
        words = s.scalars(select(WordScore).where(WordScore.submission_id == sub.id).order_by(WordScore.position)).all()
        assert sentence is not None and all(
            0 <= getattr(sentence, a) <= 10 and 0 <= getattr(sentence, f"{a}_expected") <= 10
            for a in ("accuracy", "fluency", "prosody", "completeness", "total"))
        assert [w.text for w in words] == item["text"].split()
        for w, ref in zip(words, item["words"], strict=True):
            assert w.stress in (5, 10) and 0 <= w.accuracy <= 10 and 0 <= w.total <= 10
            phones = s.scalars(select(PhoneScore).where(PhoneScore.word_score_id == w.id)
                               .order_by(PhoneScore.position)).all()
            assert [p.phone for p in phones] == ref["phones"]
        assert sub.raw_output.startswith("Sentence Scores: ") and sub.attempts == 1


@pytest.mark.parametrize("broker,n", [("redis", 50), ("amqp", 50)])
def test_clips_scored_end_to_end(fleet_factory, sample_items, broker: str, n: int) -> None:
    fleet = fleet_factory(broker)
    items = sample_items[:n]
    ids = {}
    for item in items:
        uri = fleet.upload(f"in/{item['utt_id']}.flac", _clip_bytes(item))
        r = fleet.submit(fleet.submission_body(item, uri))
        assert r.status_code == 202, r.text
        ids[r.json()["id"]] = item
    done = fleet.wait_finished(list(ids), timeout_s=600)
    failed = {i: (d.error_code, d.error_message) for i, d in done.items() if d.status.value != "scored"}
    assert not failed
    for sub_id, sub in done.items():
        _check_complete(fleet, sub, ids[sub_id])
    deadline = time.monotonic() + 60
    while len(fleet.receiver.received) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    got = fleet.receiver.received
    assert all(c["valid"] for c in got)
    assert {c["payload"]["data"]["id"] for c in got} == set(ids)


def _clip_bytes(item: dict) -> bytes:
    from tests.conftest import SAMPLE_DIR

    return (SAMPLE_DIR / item["audio"]).read_bytes()
