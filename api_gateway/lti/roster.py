"""Names and Role Provisioning (NRPS 2.0): a course's roster from the platform, for teachers.

The membership URL comes from the newest launch in that course whose platform offered NRPS (the
claim is per context); the access token from `fleet.lti_oauth` (cached). Each member gets the
latest score this service holds for them in that course, so a teacher sees who has not recorded.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api_gateway.errors import ApiError
from api_gateway.lti import claims as c
from db.models import (
    LtiLaunch,
    LtiRegistration,
    SentenceScore,
    Submission,
    SubmissionStatus,
)
from db.results import iso
from fleet.lti_oauth import TokenError, access_token

MEMBERSHIP_MEDIA_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"


def _memberships_source(session: Session, tenant_id: uuid.UUID | None, course_id: str) -> tuple[LtiRegistration, str]:
    q = select(LtiLaunch).where(LtiLaunch.context_id == course_id).order_by(LtiLaunch.created_at.desc()).limit(50)
    if tenant_id is not None:
        q = q.where(LtiLaunch.tenant_id == tenant_id)
    for launch in session.scalars(q):
        url = ((launch.claims or {}).get(c.NRPS) or {}).get("context_memberships_url")
        if url:
            registration = session.get(LtiRegistration, launch.registration_id)
            if registration is not None and registration.active:
                return registration, url
    raise ApiError(404, "no_roster", f"no LTI launch in course {course_id!r} came from a platform offering NRPS")


def _latest_scores(session: Session, tenant_id: uuid.UUID, course_id: str) -> dict[str, dict[str, Any]]:
    latest = (select(Submission.learner_id, func.max(Submission.finished_at).label("at"))
              .where(Submission.tenant_id == tenant_id, Submission.course_id == course_id,
                     Submission.status == SubmissionStatus.scored)
              .group_by(Submission.learner_id).subquery())
    rows = session.execute(
        select(Submission.learner_id, SentenceScore.total, Submission.finished_at)
        .join(latest, (latest.c.learner_id == Submission.learner_id) & (latest.c.at == Submission.finished_at))
        .join(SentenceScore, SentenceScore.submission_id == Submission.id)
        .where(Submission.tenant_id == tenant_id, Submission.course_id == course_id)
    ).all()
    return {r.learner_id: {"total": r.total, "at": iso(r.finished_at)} for r in rows}


def course_roster(session: Session, tenant_id: uuid.UUID | None, course_id: str) -> dict[str, Any]:
    import httpx  # loaded when a roster is asked for, not with every gateway process

    registration, url = _memberships_source(session, tenant_id, course_id)
    with httpx.Client() as http:
        try:
            token, _ = access_token(session, registration, http, (c.NRPS_SCOPE,))
            response = http.get(url, headers={"Authorization": f"Bearer {token}", "Accept": MEMBERSHIP_MEDIA_TYPE},
                                timeout=10.0)
        except (TokenError, httpx.HTTPError) as exc:
            raise ApiError(502, "roster_unavailable", f"the platform's roster could not be read: {exc}") from None
    if not response.is_success:
        raise ApiError(502, "roster_unavailable", f"the platform answered HTTP {response.status_code} for the roster")
    body = response.json()
    scores = _latest_scores(session, registration.tenant_id, course_id)
    members = [{
        "user_id": m.get("user_id"), "name": m.get("name"), "roles": m.get("roles") or [],
        "status": m.get("status", "Active"), "latest": scores.get(m.get("user_id")),
    } for m in body.get("members") or []]
    return {"course_id": course_id, "context": body.get("context"), "members": members}
