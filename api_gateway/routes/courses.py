"""`GET /v1/courses/{course_id}/learners`: each learner's latest and mean sentence scores."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api_gateway.auth import ReaderDep
from api_gateway.deps import SessionDep
from api_gateway.errors import error_responses
from api_gateway.schemas import CourseSummary
from db.queries import course_learners

router = APIRouter(prefix="/v1/courses", tags=["scores"])


@router.get(
    "/{course_id}/learners",
    response_model=CourseSummary,
    summary="A course's learners: scored count, latest and mean sentence scores",
    responses=error_responses(401, 403),
)
def course_summary(
    course_id: str,
    principal: ReaderDep,
    session: SessionDep,
    tenant_id: Annotated[uuid.UUID | None, Query(description="ops only: one tenant")] = None,
) -> dict[str, Any]:
    tenant_filter, _courses = principal.scope(tenant_id=tenant_id, course_id=course_id)
    return {"course_id": course_id, "learners": course_learners(session, course_id, tenant_id=tenant_filter)}
