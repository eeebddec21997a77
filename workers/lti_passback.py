"""AGS grade passback: post a launch-created submission's score to the platform's line item.

The `lti_grades` row is written with the submission (status `waiting`). The delivery beat promotes
rows whose submission has finished: `scored` -> `pending` with scoreGiven = sentence total x 10,
`failed` -> `skipped` (a failed recording posts nothing). A pending row is posted like a result
callback: a short lease per try, retries with jittered backoff, `failed` with the last error after
`APA_LTI_MAX_GRADE_ATTEMPTS` or on a refusal that retrying cannot fix (visible at
`GET /v1/lti/grades?status=failed`).

The access token comes from `fleet.lti_oauth` (client-credentials grant with a JWT assertion,
cached until shortly before it expires); it is dropped from the cache when the platform answers 401.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import LtiGrade, LtiGradeStatus, LtiRegistration, Submission, SubmissionStatus, utcnow
from fleet.lti_oauth import TOKENS, TokenCache, TokenError, access_token
from fleet.retry import RetryPolicy

LEASE_S = 60
SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCORE_MEDIA_TYPE = "application/vnd.ims.lis.v1.score+json"
RETRYABLE_4XX = {401, 408, 429}


def scores_url(lineitem_url: str) -> str:
    """AGS 2.0 3.4: the scores endpoint is the line item URL with `/scores` appended to its path."""
    parts = urlsplit(lineitem_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/scores"))


def score_payload(grade: LtiGrade) -> dict[str, Any]:
    return {
        "userId": grade.user_id,
        "scoreGiven": grade.score_given,
        "scoreMaximum": 100,
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "timestamp": utcnow().isoformat(timespec="milliseconds"),
    }


def promote_finished(session: Session, limit: int = 200) -> int:
    """Waiting rows whose submission finished: scored -> pending (with the score), failed -> skipped."""
    rows = session.execute(
        select(LtiGrade, Submission)
        .join(Submission, Submission.id == LtiGrade.submission_id)
        .where(LtiGrade.status == LtiGradeStatus.waiting,
               Submission.status.in_([SubmissionStatus.scored, SubmissionStatus.failed]))
        .limit(limit)
    ).all()
    for grade, sub in rows:
        total = sub.sentence.total if sub.status is SubmissionStatus.scored and sub.sentence is not None else None
        if total is None:
            grade.status = LtiGradeStatus.skipped
            grade.last_error = (f"the recording failed ({sub.error_code}): nothing posted"
                                if sub.status is SubmissionStatus.failed else "no sentence total: nothing posted")
        else:
            grade.status, grade.score_given, grade.next_attempt_at = LtiGradeStatus.pending, float(total) * 10, utcnow()
    session.commit()
    return len(rows)


def due_grades(session: Session, limit: int = 100) -> list[uuid.UUID]:
    return list(session.scalars(
        select(LtiGrade.id).where(LtiGrade.status == LtiGradeStatus.pending, LtiGrade.next_attempt_at <= utcnow())
        .order_by(LtiGrade.next_attempt_at).limit(limit)
    ))


def _lease(session: Session, grade_id: uuid.UUID) -> bool:
    now = utcnow()
    res = session.execute(
        update(LtiGrade)
        .where(LtiGrade.id == grade_id, LtiGrade.status == LtiGradeStatus.pending, LtiGrade.next_attempt_at <= now)
        .values(next_attempt_at=now + timedelta(seconds=LEASE_S))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount == 1


def post_grade(session: Session, grade_id: uuid.UUID, http: httpx.Client, *, max_attempts: int,
               cache: TokenCache = TOKENS) -> float | None:
    """One try at posting a pending grade; returns seconds until the next try, or None when finished."""
    if not _lease(session, grade_id):
        return None
    grade = session.get(LtiGrade, grade_id)
    registration = session.get(LtiRegistration, grade.registration_id)
    grade.attempts += 1
    if registration is None or not registration.active:
        grade.status, grade.last_error = LtiGradeStatus.failed, "the platform registration is gone or inactive"
        session.commit()
        return None
    status_code: int | None = None
    try:
        token, cache_key = access_token(session, registration, http, (SCORE_SCOPE,), cache)
        response = http.post(scores_url(grade.lineitem_url), json=score_payload(grade), timeout=10.0,
                             headers={"Authorization": f"Bearer {token}", "Content-Type": SCORE_MEDIA_TYPE})
        status_code = response.status_code
        error = None if response.is_success else f"HTTP {status_code} from the score service: {response.text[:200]}"
        if status_code == 401:
            cache.drop(cache_key)  # a revoked or expired token: fetch a new one on the retry
    except TokenError as exc:
        status_code, error = exc.status_code, str(exc)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        grade.status, grade.last_error = LtiGradeStatus.failed, f"bad line item URL: {exc}"
        session.commit()
        return None
    except Exception as exc:  # network faults: recorded, retried with backoff
        error = f"{type(exc).__name__}: {exc}"
    grade.last_status_code, grade.last_error = status_code, error
    retry_in: float | None = None
    if error is None:
        grade.status, grade.delivered_at = LtiGradeStatus.delivered, utcnow()
    elif status_code is not None and 400 <= status_code < 500 and status_code not in RETRYABLE_4XX:
        grade.status = LtiGradeStatus.failed
    elif grade.attempts >= max_attempts:
        grade.status = LtiGradeStatus.failed
    else:
        retry_in = RetryPolicy().delay_s(grade.attempts)  # workers.persist.backoff_s is gone since the retry policy
        grade.next_attempt_at = utcnow() + timedelta(seconds=retry_in)
    session.commit()
    return retry_in
