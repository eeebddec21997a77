"""Seeded data for the teachers' pages: two tenants, three courses, learners with histories.

Written through the project's own tables (db.models), the way the worker and the registry write
them, plus real objects in the S3 server: a playable WAV per recording and a PNG training plot.

acme/c1: L1..L5 (L3's last three totals fall: 8 -> 6 -> 4), one failed and one queued recording
of L1; L1's newest recording has word and phone scores. acme/c2: M1. globex/c1: L1 again (same
learner id, another tenant). Adapters v1 (active) and v2 (candidate); one finished training job.
"""

from __future__ import annotations

import io
import math
import struct
import uuid
import wave
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session, sessionmaker

from db.accounts import create_api_key, create_tenant
from db.engine import session_scope
from db.models import (
    Adapter, AdapterStatus, JobStatus, PhoneScore, Role, SentenceScore, Submission, SubmissionStatus,
    TrainingJob, WordScore,
)
from db.summary import add_scored as add_to_course_summary
from fleet.storage import ObjectStore

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=timezone.utc)
AUDIO_SECONDS = 1.0

# learner -> totals of their scored c1 recordings, oldest first
C1_TOTALS: dict[str, list[int]] = {
    "L1": [5, 6, 7, 7],
    "L2": [9, 9],
    "L3": [7, 8, 6, 4],
    "L4": [3, 5, 6, 8, 9],
    "L5": [6],
}
WORDS = [  # text, accuracy, phones with their stored (0..10) scores
    ("WE", 9, [("W", 10), ("IY", 10)]),
    ("CALL", 4, [("K", 10), ("AO", 5), ("L", 0)]),
    ("IT", 7, [("IH", 5), ("T", 10)]),
    ("BEAR", 2, [("B", 10), ("EH", 0), ("R", 0)]),
]


@dataclass
class Seeded:
    bucket: str
    acme: uuid.UUID
    globex: uuid.UUID
    keys: dict[str, str] = field(default_factory=dict)
    detailed: uuid.UUID | None = None  # L1's newest, with words and phones
    failed: uuid.UUID | None = None
    other_course: uuid.UUID | None = None  # acme/c2
    other_tenant: uuid.UUID | None = None  # globex/c1
    job: uuid.UUID | None = None


def wav_bytes(seconds: float = AUDIO_SECONDS, rate: int = 16000) -> bytes:
    """A real 16-bit mono WAV (a 440 Hz tone) the browser can decode and play."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
        ))
    return buf.getvalue()


def png_bytes(width: int = 40, height: int = 20) -> bytes:
    """A small valid PNG (a gradient), standing in for the training report's plot."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + bytes((x * 6) % 256 for x in range(width)) * 3 for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _aspects(total: int) -> dict[str, int]:
    return {"accuracy": min(10, total + 1), "fluency": max(0, total - 2), "prosody": max(0, total - 1), "completeness": 10,
            "total": total}


def _submission(s: Session, store: ObjectStore, bucket: str, tenant: uuid.UUID, learner: str, course: str,
                at: datetime, *, total: int | None, status: SubmissionStatus = SubmissionStatus.scored,
                words: bool = False) -> uuid.UUID:
    sid = uuid.uuid4()
    uri = f"s3://{bucket}/audio/{sid}.wav"
    store.put(uri, wav_bytes(), content_type="audio/wav")
    sub = Submission(
        id=sid, tenant_id=tenant, lms_submission_id=f"{learner}-{course}-{at:%m%d%H%M}", learner_id=learner,
        course_id=course, reference_text="We call it bear", audio_uri=uri, granularity="full", status=status,
        created_at=at, updated_at=at,
    )
    if status is SubmissionStatus.scored and total is not None:
        sub.finished_at = at + timedelta(seconds=3)
        sub.model_name, sub.adapter_version, sub.model_ms = "Qwen/Qwen2-Audio-7B-Instruct", "v1", 812.0
        values = _aspects(total)
        sub.sentence = SentenceScore(**values, **{f"{a}_expected": v - 0.3 if v else 0.2 for a, v in values.items()})
        s.add(sub)
        s.flush()
        add_to_course_summary(s, sid)  # what the worker's result transaction does
    elif status is SubmissionStatus.failed:
        sub.error_code, sub.error_message = "audio_silent", "no speech energy above -50 dBFS"
    s.add(sub)
    if words:
        s.flush()
        for i, (text, acc, phones) in enumerate(WORDS):
            w = WordScore(submission_id=sid, position=i, text=text, accuracy=acc, accuracy_expected=acc + 0.4,
                          total=acc, total_expected=acc + 0.4)
            w.phones = [PhoneScore(submission_id=sid, position=j, phone=p, accuracy=v, accuracy_expected=v * 0.9 + 0.3)
                        for j, (p, v) in enumerate(phones)]
            s.add(w)
    return sid


def seed(sessions: sessionmaker[Session], store: ObjectStore, bucket: str, *, now: datetime | None = None) -> Seeded:
    """Write the whole fixture; recordings are a day apart, the newest an hour before `now`."""
    now = now or datetime.now(timezone.utc)
    with session_scope(sessions) as s:
        acme = create_tenant(s, "acme", allowed_buckets=[bucket])
        globex = create_tenant(s, "globex", allowed_buckets=[bucket])
        out = Seeded(bucket, acme.id, globex.id)
        out.keys["teacher_c1"] = create_api_key(s, Role.teacher, tenant=acme, courses=["c1"], name="Ms Rivera (c1)")[1]
        out.keys["teacher_c2"] = create_api_key(s, Role.teacher, tenant=acme, courses=["c2"], name="Mr Chen (c2)")[1]
        out.keys["ops"] = create_api_key(s, Role.ops, name="ops on call")[1]
        out.keys["lms"] = create_api_key(s, Role.lms, tenant=acme)[1]
        for learner, totals in C1_TOTALS.items():
            start = now - timedelta(days=len(totals), hours=1)
            for i, total in enumerate(totals):
                last = learner == "L1" and i == len(totals) - 1
                sid = _submission(s, store, bucket, acme.id, learner, "c1", start + timedelta(days=i), total=total,
                                  words=last)
                if last:
                    out.detailed = sid
        out.failed = _submission(s, store, bucket, acme.id, "L1", "c1", now - timedelta(hours=3), total=None,
                                 status=SubmissionStatus.failed)
        _submission(s, store, bucket, acme.id, "L1", "c1", now - timedelta(minutes=5), total=None,
                    status=SubmissionStatus.queued)
        out.other_course = _submission(s, store, bucket, acme.id, "M1", "c2", now - timedelta(days=1), total=3)
        out.other_tenant = _submission(s, store, bucket, globex.id, "L1", "c1", now - timedelta(days=1), total=2)

        job = TrainingJob(status=JobStatus.succeeded, trigger="batch", params={"epochs": 2}, step=120, total_steps=120,
                          epoch=2.0, latest_loss=0.412, metrics={"pcc_total": {"before": 0.61, "after": 0.68}},
                          report_uri=f"s3://{bucket}/reports/job1/report.md", created_at=now - timedelta(days=2),
                          finished_at=now - timedelta(days=2) + timedelta(hours=3))
        s.add(job)
        s.flush()
        out.job = job.id
        store.put(f"s3://{bucket}/reports/job1/report.md", b"# report\n", content_type="text/markdown")
        store.put(f"s3://{bucket}/reports/job1/report.png", png_bytes(), content_type="image/png")
        base = "Qwen/Qwen2-Audio-7B-Instruct"
        s.add(Adapter(version="v1", base_model=base, uri=f"s3://{bucket}/adapters/v1", status=AdapterStatus.active,
                      activated_at=now - timedelta(days=10), created_at=now - timedelta(days=11)))
        s.add(Adapter(version="v2", base_model=base, uri=f"s3://{bucket}/adapters/v2", status=AdapterStatus.candidate,
                      training_job_id=job.id, metrics={"pcc_total": 0.68}, created_at=now - timedelta(days=2)))
    return out
