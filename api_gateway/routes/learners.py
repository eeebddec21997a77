"""`GET /v1/learners/{learner_id}/scores`: one learner's history, newest first, with aggregates."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import Row

from api_gateway.auth import ReaderDep
from api_gateway.deps import SessionDep
from api_gateway.errors import ApiError, error_responses
from api_gateway.schemas import LearnerHistory
from db.models import SubmissionStatus
from db.queries import HistoryFilter, HistoryKey, learner_aggregates, learner_history
from db.results import error_of, iso, sentence_scores

router = APIRouter(prefix="/v1/learners", tags=["scores"])


def encode_cursor(key: HistoryKey) -> str:
    raw = json.dumps([key[0].isoformat(), str(key[1])], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> HistoryKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, sid = json.loads(raw)
        return datetime.fromisoformat(at), uuid.UUID(sid)
    except Exception:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned") from None


def history_item(sub: Row[Any]) -> dict[str, Any]:
    """One history row (`db.queries.learner_history`: item columns and sentence scores) as JSON."""
    return {
        "id": str(sub.id),
        "submission_id": sub.lms_submission_id,
        "tenant_id": str(sub.tenant_id),
        "course_id": sub.course_id,
        "assignment_id": sub.assignment_id,
        "status": sub.status.value,
        "granularity": sub.granularity,
        "created_at": iso(sub.created_at),
        "finished_at": iso(sub.finished_at),
        "error": error_of(sub),
        "sentence": sentence_scores(sub) if sub.sentence_id is not None else None,
    }


@router.get(
    "/{learner_id}/scores",
    response_model=LearnerHistory,
    summary="A learner's score history (newest first) and per-aspect aggregates",
    description=(
        "Items are ordered by (created_at, id) descending and paged with an opaque `cursor` "
        "(pass `next_cursor` back with the same filters). `since` is inclusive, `until` exclusive; "
        "naive datetimes are UTC. Aggregates cover the whole filtered window (not one page), over "
        "scored submissions, on the integer sentence scores: `mean`, `latest` and `trend`, the "
        "least-squares slope per scored submission index (score points per submission)."
    ),
    responses=error_responses(400, 401, 403),
)
def learner_scores(
    learner_id: str,
    principal: ReaderDep,
    session: SessionDep,
    course_id: str | None = None,
    assignment_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: SubmissionStatus | None = None,
    tenant_id: Annotated[uuid.UUID | None, Query(description="ops only: one tenant")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    tenant_filter, courses = principal.scope(tenant_id=tenant_id, course_id=course_id)
    flt = HistoryFilter(
        learner_id=learner_id, tenant_id=tenant_filter, courses=courses, course_id=course_id,
        assignment_id=assignment_id, since=since, until=until, status=status,
    )
    after = decode_cursor(cursor) if cursor else None
    rows, next_key = learner_history(session, flt, limit=limit, after=after)
    return {
        "learner_id": learner_id,
        "items": [history_item(row) for row in rows],
        "next_cursor": encode_cursor(next_key) if next_key else None,
        "aggregates": learner_aggregates(session, flt),
        "trend_unit": "points per scored submission",
    }
