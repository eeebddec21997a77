"""Accepting one LMS submission: validate, write the row, commit, then publish its id.

Order matters (DESIGN.md, data flow step 2): the row is the record, so it is committed before
the Celery message names it; if publishing fails the row stays `queued` and the sweeper
re-publishes it. Duplicate deliveries (same tenant + webhook id, or same tenant + LMS id) get
the existing submission back when their content is the same, and 409 `replay_conflict` when it
is not (the LMS must not believe a different submission was accepted); concurrent duplicates
are settled by the unique constraints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api_gateway.errors import ApiError
from api_gateway.schemas import SubmissionIn
from db.models import Submission, SubmissionStatus, Tenant
from fleet.callback_policy import CallbackRefused, check_callback_url
from fleet.queue import SCORE_TASK, publish
from fleet.settings import Settings
from fleet.storage import (
    AccessDenied,
    InvalidObjectURI,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageNotConfigured,
    StorageUnavailable,
    parse_uri,
)
from pronunciation.errors import PronunciationInputError
from pronunciation.lexicon import check_reference

log = logging.getLogger(__name__)


@dataclass
class Accepted:
    submission: Submission
    created: bool


def check_audio(store: ObjectStore, settings: Settings, tenant: Tenant, uri: str) -> None:
    """The audio object exists, is readable, allowed for this tenant and not too large.

    Local paths (the local backend) resolve inside the tenant's own folder and may not leave it."""
    try:
        ref = parse_uri(uri)
    except InvalidObjectURI as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    if ref.scheme == "s3" and not store.s3_configured:
        raise ApiError(
            422, StorageNotConfigured.code,
            f"{uri}: this service keeps audio in a local folder (APA_STORAGE_BACKEND=local): send a path relative "
            "to your tenant's folder, or have the operator set APA_STORAGE_BACKEND=s3",
        )
    if ref.scheme == "s3":
        if ref.bucket not in (tenant.allowed_buckets or []):
            raise ApiError(
                422, "bucket_not_allowed", f"bucket {ref.bucket!r} is not among this tenant's allowed buckets"
            )
        if not ref.key or ref.key.endswith("/"):
            raise ApiError(422, "invalid_uri", f"{uri}: names no object")
    elif store.s3_configured:
        raise ApiError(
            422, "local_path_not_allowed", "audio_uri must be s3://bucket/key: this service reads audio from S3"
        )
    else:
        store = store.for_tenant(tenant.id)
    try:
        info = store.head(uri)
    except StorageNotConfigured as exc:  # the operator's setting, not a fault to retry
        raise ApiError(422, exc.code, f"the service's object storage is not configured: {exc} ({exc.setting})") from None
    except StorageUnavailable as exc:
        raise ApiError(503, exc.code, f"the object store is unreachable: {exc}", headers={"Retry-After": "30"}) from None
    except (ObjectNotFound, AccessDenied, InvalidObjectURI) as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except StorageError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    if info.size > settings.max_audio_bytes:
        raise ApiError(
            422, "object_too_large", f"{uri}: {info.size} bytes is over the limit of {settings.max_audio_bytes}"
        )
    if info.size == 0:
        raise ApiError(422, "object_empty", f"{uri}: the object is empty")


def existing_deliveries(session: Session, tenant: Tenant, payload: SubmissionIn, webhook_id: str) -> list[Submission]:
    """The tenant's rows with this LMS submission id or this webhook id (at most two)."""
    return list(session.scalars(
        select(Submission)
        .where(
            Submission.tenant_id == tenant.id,
            or_(Submission.lms_submission_id == payload.submission_id, Submission.webhook_id == webhook_id),
        )
        .order_by(Submission.created_at)
    ))


def content_differences(sub: Submission, payload: SubmissionIn) -> list[str]:
    """The fields in which a repeated delivery differs from the stored submission."""
    phones = (
        [[p.strip().upper() for p in word] for word in payload.reference_phones]
        if payload.reference_phones is not None else None
    )
    delivered = {
        "submission_id": payload.submission_id, "learner_id": payload.learner_id, "course_id": payload.course_id,
        "assignment_id": payload.assignment_id, "reference_text": payload.reference_text,
        "reference_phones": phones, "audio_uri": payload.audio_uri, "granularity": payload.granularity.value,
        "callback_url": payload.callback_url,
    }
    stored = {
        "submission_id": sub.lms_submission_id, "learner_id": sub.learner_id, "course_id": sub.course_id,
        "assignment_id": sub.assignment_id, "reference_text": sub.reference_text,
        "reference_phones": sub.reference_phones, "audio_uri": sub.audio_uri, "granularity": sub.granularity,
        "callback_url": sub.callback_url,
    }
    return [name for name in delivered if delivered[name] != stored[name]]


def repeated_delivery(
    session: Session, tenant: Tenant, payload: SubmissionIn, webhook_id: str
) -> Accepted | None:
    """The stored submission this delivery repeats (200), None if new, 409 if its content differs."""
    rows = existing_deliveries(session, tenant, payload, webhook_id)
    if not rows:
        return None
    for row in rows:
        differs = content_differences(row, payload)
        if differs:
            same_id = "webhook-id" if row.webhook_id == webhook_id else "submission_id"
            raise ApiError(
                409, "replay_conflict",
                f"this {same_id} was already accepted as submission {row.id} with different content "
                f"({', '.join(differs)}); send new content under a new submission_id and webhook-id",
                submission=str(row.id), fields=differs,
            )
    return Accepted(rows[0], created=False)


def accept_submission(
    session: Session,
    *,
    store: ObjectStore,
    celery: Celery,
    settings: Settings,
    tenant: Tenant,
    webhook_id: str,
    payload: SubmissionIn,
) -> Accepted:
    repeated = repeated_delivery(session, tenant, payload, webhook_id)
    if repeated is not None:
        return repeated

    try:  # words known to CMUdict (or the caller's phones valid); the worker looks the phones up
        given = check_reference(
            payload.reference_text, payload.reference_phones, max_words=settings.max_reference_words
        )
    except PronunciationInputError as exc:
        raise ApiError(422, exc.code, exc.message) from None
    if payload.callback_url is not None:
        try:
            check_callback_url(payload.callback_url, tenant.callback_url,
                               allow_loopback_http=settings.callback_allow_loopback_http)
        except CallbackRefused as exc:
            raise ApiError(422, "callback_url_not_allowed", str(exc)) from None
    check_audio(store, settings, tenant, payload.audio_uri)

    phones = [list(p) for p in given] if given is not None else None
    sub = Submission(
        tenant_id=tenant.id,
        lms_submission_id=payload.submission_id,
        webhook_id=webhook_id,
        learner_id=payload.learner_id,
        course_id=payload.course_id,
        assignment_id=payload.assignment_id,
        reference_text=payload.reference_text,
        reference_phones=phones,
        audio_uri=payload.audio_uri,
        granularity=payload.granularity.value,
        callback_url=payload.callback_url,
        status=SubmissionStatus.queued,
    )
    session.add(sub)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # a concurrent delivery of the same submission won the race
        log.info("duplicate delivery of %s/%s settled by the unique constraints", tenant.name, payload.submission_id)
        repeated = repeated_delivery(session, tenant, payload, webhook_id)
        if repeated is None:
            raise
        return repeated

    try:
        publish(celery, SCORE_TASK, str(sub.id))
    except Exception as exc:  # the row is the record; the sweeper re-publishes queued rows
        log.warning("submission %s committed but not published (the sweeper will): %s", sub.id, exc)
    return Accepted(sub, created=True)
