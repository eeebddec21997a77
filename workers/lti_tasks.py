"""Celery tasks of the AGS grade passback, on the `deliver` queue beside the result callbacks."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.exc import OperationalError

from fleet.queue import LTI_GRADE_TASK, LTI_GRADES_DUE_TASK, publish
from workers import resources
from workers.celery_app import app
from workers.lti_passback import due_grades, post_grade, promote_finished


@app.task(name=LTI_GRADE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=8)
def lti_grade_task(grade_id: str) -> None:
    with resources.sessions()() as s, httpx.Client() as http:
        retry_in = post_grade(s, uuid.UUID(grade_id), http, max_attempts=resources.settings().lti_max_grade_attempts,
                             policy=resources.settings().retry_policy(delivery=True))
    if retry_in is not None:
        publish(app, LTI_GRADE_TASK, grade_id, countdown=retry_in)


@app.task(name=LTI_GRADES_DUE_TASK)
def lti_grades_due() -> int:
    """Beat: promote finished submissions' grades, then post the due ones (the row is the record)."""
    with resources.sessions()() as s:
        promote_finished(s)
        ids = due_grades(s)
    for grade_id in ids:
        publish(app, LTI_GRADE_TASK, str(grade_id))
    return len(ids)
