"""One submission as a JSON-ready dict: what `GET /v1/submissions/{id}` returns and what the
worker POSTs to the LMS as the result callback, so the two can never drift apart.

Shape (every key always present; scores a granularity mode does not produce are null):

    {
      "id": "<uuid>", "submission_id": "<the LMS's id>", "tenant_id": "<uuid>",
      "learner_id": str, "course_id": str, "assignment_id": str | null,
      "reference_text": str, "granularity": "full" | ..., "status": "queued" | "running" | "scored" | "failed",
      "error": null | {"code": str, "message": str},
      "attempts": int, "adapter_version": str | null, "model_name": str | null,
      "timings": {"created_at": iso, "started_at": iso | null, "finished_at": iso | null, "model_ms": float | null},
      "scales": {"sentence": "0-10", "word": "0-10 (stress: 5 or 10)", "phone": "0-10 (...)"},
      "scores": {
        "sentence": null | {"accuracy": S | null, "fluency": S | null, "prosody": S | null,
                            "completeness": S | null, "total": S | null},
        "words": [{"position": int, "text": str, "accuracy": S | null, "stress": S | null,
                   "total": S | null, "phones": [{"phone": str, "accuracy": S}]}]
      }
    }

where S is {"value": int 0..10 (the model's argmax), "expected": float (its expected value)}.

One scale per level, 0-10 everywhere the service writes a score (API, callback, teachers' pages,
LTI): sentence and word scores are speechocean762's 0-10; phone accuracy is speechocean762's 0-2
annotation scale x 5 (annotation batches stay on 0-2 and are converted when training reads them).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import Delivery, DeliveryStatus, SentenceScore, Submission, WordScore

SENTENCE_ASPECTS: tuple[str, ...] = ("accuracy", "fluency", "prosody", "completeness", "total")
WORD_ASPECTS: tuple[str, ...] = ("accuracy", "stress", "total")
SCALES: dict[str, str] = {
    "sentence": "0-10",
    "word": "0-10 (stress: 5 or 10)",
    "phone": "0-10 (speechocean762's 0-2 x 5: 0 wrong, 5 heavy accent, 10 right)",
}


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive (they are stored in UTC); make every one aware."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, the same text pydantic writes for an aware datetime."""
    value = as_utc(value)
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def score(value: int | None, expected: float | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"value": int(value), "expected": float(expected) if expected is not None else float(value)}


def sentence_scores(row: SentenceScore | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {a: score(getattr(row, a), getattr(row, f"{a}_expected")) for a in SENTENCE_ASPECTS}


def word_scores(word: WordScore) -> dict[str, Any]:
    out: dict[str, Any] = {"position": word.position, "text": word.text}
    for aspect in WORD_ASPECTS:
        out[aspect] = score(getattr(word, aspect), getattr(word, f"{aspect}_expected"))
    out["phones"] = [
        {"phone": p.phone, "accuracy": score(p.accuracy, p.accuracy_expected)} for p in word.phones
    ]
    return out


def error_of(sub: Submission) -> dict[str, str] | None:
    if sub.error_code is None and sub.error_message is None:
        return None
    return {"code": sub.error_code or "error", "message": sub.error_message or ""}


def submission_result(sub: Submission) -> dict[str, Any]:
    """The submission with its scores at every granularity (see the module docstring).

    Touches `sub.sentence`, `sub.words` and their phones: load them eagerly (`load_submission`)
    or call this while the row is attached to a session.
    """
    return {
        "id": str(sub.id),
        "submission_id": sub.lms_submission_id,
        "tenant_id": str(sub.tenant_id),
        "learner_id": sub.learner_id,
        "course_id": sub.course_id,
        "assignment_id": sub.assignment_id,
        "reference_text": sub.reference_text,
        "granularity": sub.granularity,
        "status": sub.status.value if hasattr(sub.status, "value") else str(sub.status),
        "error": error_of(sub),
        "attempts": sub.attempts or 0,
        "adapter_version": sub.adapter_version,
        "model_name": sub.model_name,
        "engine": sub.engine,
        "model_version": sub.model_version,
        "timings": {
            "created_at": iso(sub.created_at),
            "started_at": iso(sub.started_at),
            "finished_at": iso(sub.finished_at),
            "model_ms": sub.model_ms,
        },
        "scales": dict(SCALES),
        "scores": {
            "sentence": sentence_scores(sub.sentence),
            "words": [word_scores(w) for w in sub.words],
        },
    }


def load_submission(session: Session, submission_id: uuid.UUID) -> Submission | None:
    """The submission with its sentence, word and phone scores, in three small queries."""
    return session.scalar(
        select(Submission)
        .where(Submission.id == submission_id)
        .options(
            selectinload(Submission.sentence),
            selectinload(Submission.words).selectinload(WordScore.phones),
        )
    )


def delivery_state(session: Session, submission_id: uuid.UUID) -> dict[str, Any] | None:
    """The newest result callback of a submission, so a failing one is visible to whoever polls.

    `failing` is true when the last try failed (still `pending` with an error) or it was given up.
    """
    row = session.scalars(
        select(Delivery).where(Delivery.submission_id == submission_id).order_by(Delivery.created_at.desc()).limit(1)
    ).first()
    if row is None:
        return None
    failed = row.status is DeliveryStatus.failed
    pending = row.status is DeliveryStatus.pending
    return {
        "id": str(row.id),
        "url": row.url,
        "status": row.status.value,
        "failing": failed or (pending and row.last_error is not None),
        "attempts": row.attempts or 0,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at) if pending else None,
        "delivered_at": iso(row.delivered_at),
    }


def delivery_counts(session: Session) -> dict[str, int]:
    """Callbacks not (yet) delivered, by state: `pending` (not tried or no error yet), `retrying`
    (the last try failed, another is due) and `failed` (given up). Delivered rows are not counted:
    they only grow, and the status index answers the rest."""
    counts = {"pending": 0, "retrying": 0, "failed": 0}
    rows = session.execute(
        select(Delivery.status, Delivery.last_error.is_not(None), func.count())
        .where(Delivery.status.in_([DeliveryStatus.pending, DeliveryStatus.failed]))
        .group_by(Delivery.status, Delivery.last_error.is_not(None))
    )
    for status, has_error, n in rows:
        if status is DeliveryStatus.failed or status == DeliveryStatus.failed.value:
            counts["failed"] += n
        else:
            counts["retrying" if has_error else "pending"] += n
    return counts
