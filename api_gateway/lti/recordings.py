"""A learner's recording from the LTI page: stored, then enqueued as a submission.

The gateway checks what it can without decoding (content type, size, empty body, the reference
text), with the webhook path's error codes (`object_too_large`, `object_empty`, `unknown_word`, ...);
decoding checks (`audio_undecodable`, `audio_too_short`, ...) happen in the score worker, which
fails the submission with the same codes. The submission row and, when the launch offers AGS, its
grade-passback row are committed together before the score task is published.
"""

from __future__ import annotations

import json
import logging
import uuid

from celery import Celery
from sqlalchemy.orm import Session

from api_gateway.errors import ApiError
from api_gateway.lti import claims as c
from api_gateway.lti.launches import custom
from db.models import LtiGrade, LtiGradeStatus, LtiLaunch, Submission, SubmissionStatus
from fleet.queue import SCORE_TASK, publish
from fleet.settings import Settings
from fleet.storage import ObjectStore, StorageError, StorageUnavailable
from pronunciation.errors import PronunciationInputError
from pronunciation.lexicon import build_reference

log = logging.getLogger(__name__)

AUDIO_TYPES = {
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
    "audio/flac": "flac", "audio/x-flac": "flac", "audio/ogg": "ogg", "audio/opus": "ogg",
    "audio/webm": "webm", "audio/mpeg": "mp3",
}


def media_type(content_type: str | None) -> str:
    base = (content_type or "").split(";")[0].strip().lower()
    if base not in AUDIO_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"send the recording as one of {', '.join(sorted(AUDIO_TYPES))}, not {base or 'nothing'!r}")
    return base


def activity_reference(launch: LtiLaunch) -> tuple[str, list[list[str]] | None]:
    """The reference text (and optional phones) the teacher set in deep linking."""
    params = custom(launch)
    text = str(params.get("reference_text") or "").strip()
    if not text:
        raise ApiError(422, "no_reference_text", "this activity has no reference text: ask the teacher to set it up again")
    phones = params.get("reference_phones")
    if isinstance(phones, str) and phones:
        try:
            phones = json.loads(phones)
        except ValueError:
            raise ApiError(422, "bad_phones", "the activity's reference phones are not valid JSON") from None
    return text, phones or None


def grade_target(launch: LtiLaunch) -> str | None:
    """The line item to post the score to, when the platform granted the score scope."""
    ags = (launch.claims or {}).get(c.AGS_ENDPOINT) or {}
    if c.AGS_SCORE_SCOPE not in (ags.get("scope") or []):
        return None
    return ags.get("lineitem")


def accept_recording(
    session: Session, *, launch: LtiLaunch, audio: bytes, content_type: str,
    store: ObjectStore, celery: Celery, settings: Settings,
) -> Submission:
    if launch.message_type != c.RESOURCE_LINK_REQUEST:
        raise ApiError(403, "not_a_recording_launch", "recordings are made from an activity link, not from deep linking")
    text, phones = activity_reference(launch)
    try:
        reference = build_reference(text, phones, max_words=settings.max_reference_words)
    except PronunciationInputError as exc:
        raise ApiError(422, exc.code, exc.message) from None
    if not audio:
        raise ApiError(422, "object_empty", "the recording is empty")
    if len(audio) > settings.max_audio_bytes:
        raise ApiError(422, "object_too_large", f"{len(audio)} bytes is over the limit of {settings.max_audio_bytes}")

    sub_id = uuid.uuid4()
    key = f"lti/{launch.tenant_id}/{sub_id}.{AUDIO_TYPES[content_type]}"
    uri = store.service_uri(settings.bucket, key)
    try:
        store.put(uri, audio, content_type=content_type)
    except StorageUnavailable as exc:
        raise ApiError(503, exc.code, f"the object store is unreachable: {exc}", headers={"Retry-After": "30"}) from None
    except StorageError as exc:
        raise ApiError(503, exc.code, f"cannot store the recording: {exc}") from None

    sub = Submission(
        id=sub_id, tenant_id=launch.tenant_id, lms_submission_id=f"lti-{sub_id}", webhook_id=None,
        learner_id=launch.user_id, course_id=launch.context_id or f"lti-{launch.resource_link_id}",
        assignment_id=launch.resource_link_id, reference_text=text,
        reference_phones=[list(w.phones) for w in reference.words] if phones is not None else None,
        audio_uri=uri, granularity="full", callback_url=None, status=SubmissionStatus.queued,
    )
    session.add(sub)
    session.flush()  # the grade row references it (no ORM relationship orders the inserts)
    lineitem = grade_target(launch)
    if lineitem:
        session.add(LtiGrade(submission_id=sub_id, registration_id=launch.registration_id, lineitem_url=lineitem,
                             user_id=launch.user_id, status=LtiGradeStatus.waiting))
    session.commit()
    try:
        publish(celery, SCORE_TASK, str(sub_id), uri)  # the URI lets the worker fetch early
    except Exception as exc:  # the row is the record; the sweeper re-publishes queued rows
        log.warning("LTI submission %s committed but not published (the sweeper will): %s", sub_id, exc)
    return sub
