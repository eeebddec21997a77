"""Writing a result: every score row, the raw text, the adapter version and the status in ONE
transaction, guarded so that a worker that lost its claim (the sweeper gave the row to another
attempt) writes nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import (
    Delivery,
    PhoneScore,
    SentenceScore,
    Submission,
    SubmissionStatus,
    Tenant,
    WordScore,
    utcnow,
)
from db.results import submission_result
from db.summary import add_scored as add_to_course_summary
from fleet.retry import RETRY_WINDOW_EXHAUSTED, RetryPolicy
from pronunciation.assess import AssessmentResult
from pronunciation.schema import Score
from workers.claim import Claim

RESULT_EVENT = "submission.completed"


def _pair(score: Score | None) -> tuple[int | None, float | None]:
    return (score.value, score.expected) if score is not None else (None, None)


def _own(session: Session, sub_id: uuid.UUID, attempt: int, **values) -> bool:
    """Conditional state change: only the holder of attempt `attempt` may finish the row."""
    res = session.execute(
        update(Submission)
        .where(Submission.id == sub_id, Submission.status == SubmissionStatus.running, Submission.attempts == attempt)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1


def _enqueue_delivery(session: Session, sub: Submission) -> uuid.UUID | None:
    tenant = session.get(Tenant, sub.tenant_id)
    url = sub.callback_url or (tenant.callback_url if tenant else None)
    if not url:
        return None
    delivery = Delivery(
        submission_id=sub.id, tenant_id=sub.tenant_id, url=url, event_type=RESULT_EVENT,
        payload={"type": RESULT_EVENT, "data": submission_result(sub)},
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def save_scores(
    session: Session, sub_id: uuid.UUID, attempt: int, result: AssessmentResult, *, model_name: str, model_ms: float
) -> uuid.UUID | None | bool:
    """Store a scored result; returns the delivery id to publish (None if no callback), or False if
    the claim was lost and nothing was written."""
    a = result.assessment
    now = utcnow()
    if not _own(session, sub_id, attempt, status=SubmissionStatus.scored, finished_at=now,
                raw_output=result.raw_text, adapter_version=result.adapter_version,
                engine=result.engine, model_version=result.model_version,
                model_name=result.model_name or model_name, model_ms=model_ms, error_code=None, error_message=None,
                lease_expires_at=None):
        session.rollback()
        return False
    if a.sentence is not None:
        s = a.sentence
        row = SentenceScore(submission_id=sub_id)
        for aspect in ("accuracy", "fluency", "prosody", "completeness", "total"):
            value, expected = _pair(getattr(s, aspect))
            setattr(row, aspect, value)
            setattr(row, f"{aspect}_expected", expected)
        session.add(row)
    for i, w in enumerate(a.words):
        word = WordScore(submission_id=sub_id, position=i, text=w.text)
        for aspect in ("accuracy", "stress", "total"):
            value, expected = _pair(getattr(w, aspect))
            setattr(word, aspect, value)
            setattr(word, f"{aspect}_expected", expected)
        word.phones = [
            PhoneScore(submission_id=sub_id, position=j, phone=p.phone,
                       accuracy=p.accuracy.value, accuracy_expected=p.accuracy.expected)
            for j, p in enumerate(w.phones)
        ]
        session.add(word)
    session.flush()
    add_to_course_summary(session, sub_id)  # the course view's row, in this same transaction
    sub = session.scalar(select(Submission).where(Submission.id == sub_id).execution_options(populate_existing=True))
    delivery_id = _enqueue_delivery(session, sub)
    session.commit()
    return delivery_id


def mark_failed(session: Session, sub_id: uuid.UUID, attempt: int | None, code: str, message: str) -> uuid.UUID | None:
    """End a submission as `failed` with its code (bad input is never retried)."""
    values = dict(status=SubmissionStatus.failed, finished_at=utcnow(), error_code=code, error_message=message[:2000],
                  lease_expires_at=None)
    if attempt is None:  # the sweeper dead-letters whatever state the row is in
        ok = session.execute(
            update(Submission).where(Submission.id == sub_id, Submission.status.in_(
                [SubmissionStatus.queued, SubmissionStatus.running])).values(updated_at=utcnow(), **values)
        ).rowcount == 1
    else:
        ok = _own(session, sub_id, attempt, **values)
    if not ok:
        session.rollback()
        return None
    sub = session.scalar(select(Submission).where(Submission.id == sub_id).execution_options(populate_existing=True))
    delivery_id = _enqueue_delivery(session, sub)
    session.commit()
    return delivery_id


@dataclass(frozen=True)
class ReleaseOutcome:
    """What became of a claimed row given back: queued again after `delay_s`, dead-lettered with
    `failed_code` (its callback `delivery_id` to publish), or nothing (the claim was lost)."""

    released: bool
    delay_s: float = 0.0
    failed_code: str | None = None
    delivery_id: uuid.UUID | None = None


def release(session: Session, claim: Claim, policy: RetryPolicy, *, count_attempt: bool = False) -> ReleaseOutcome:
    """Give a claimed row back to the queue, due after the shared retry policy's backoff.

    An infrastructure fault (object store down, database hiccup) does not use up one of the
    submission's attempts: it adds one to the row's transient-failure count, which the backoff
    grows on and which is never reset by the release, and past the policy's retry window the row
    is dead-lettered (`retry_window_exhausted`). A model failure on this very item uses an attempt
    instead, so a poison item ends dead-lettered by `APA_MAX_ATTEMPTS`, not looping."""
    now = utcnow()
    values: dict = {"status": SubmissionStatus.queued, "lease_expires_at": None}
    if count_attempt:
        delay = policy.delay_s(claim.attempt)
        values["next_attempt_at"] = now + timedelta(seconds=delay)
    else:
        decision = policy.after_failure(claim.transient_failures, claim.failing_since, now)
        if decision.give_up:
            delivery_id = mark_failed(session, claim.id, claim.attempt, RETRY_WINDOW_EXHAUSTED, decision.message)
            return ReleaseOutcome(False, failed_code=RETRY_WINDOW_EXHAUSTED, delivery_id=delivery_id)
        delay = decision.delay_s
        values.update(attempts=claim.attempt - 1, transient_failures=decision.failures,
                      failing_since=decision.failing_since, next_attempt_at=decision.next_attempt_at)
    ok = _own(session, claim.id, claim.attempt, **values)
    session.commit()
    return ReleaseOutcome(ok, delay_s=delay if ok else 0.0)
