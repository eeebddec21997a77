"""Ops API for the LTI tool: platform registrations, the tool's configuration, grade passback state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api_gateway.auth import Principal, ReaderDep, require_roles
from api_gateway.deps import SessionDep, SettingsDep
from api_gateway.errors import ApiError, error_responses
from api_gateway.lti.roster import course_roster
from db.accounts import AccountError, get_tenant
from db.lti import LtiConfigError, register_platform, registration_out
from db.models import LtiGrade, LtiGradeStatus, LtiRegistration, Role
from db.results import iso
from fleet.lti_config import tool_config

router = APIRouter(prefix="/v1/lti", tags=["lti"])
OpsDep = Annotated[Principal, Depends(require_roles(Role.ops))]


class RegistrationIn(BaseModel):
    tenant: str = Field(description="Tenant name or id")
    issuer: str
    client_id: str
    deployment_ids: list[str] = Field(min_length=1)
    auth_login_url: str
    auth_token_url: str
    keyset_url: str


@router.post("/registrations", status_code=201, summary="Register (or update) an LMS platform for a tenant",
             responses=error_responses(401, 403, 422))
def create_registration(body: RegistrationIn, response: Response, _ops: OpsDep, session: SessionDep) -> dict[str, Any]:
    try:
        tenant = get_tenant(session, body.tenant)
        row, created = register_platform(
            session, tenant, issuer=body.issuer, client_id=body.client_id, deployment_ids=body.deployment_ids,
            auth_login_url=body.auth_login_url, auth_token_url=body.auth_token_url, keyset_url=body.keyset_url,
        )
    except (AccountError, LtiConfigError) as exc:
        session.rollback()
        raise ApiError(422, "invalid_registration", str(exc)) from None
    response.status_code = 201 if created else 200
    return registration_out(row)


@router.get("/registrations", summary="Registered platforms", responses=error_responses(401, 403))
def list_registrations(_ops: OpsDep, session: SessionDep) -> list[dict[str, Any]]:
    return [registration_out(r) for r in session.scalars(select(LtiRegistration).order_by(LtiRegistration.created_at))]


@router.get("/config", summary="What the LMS administrator types in", responses=error_responses(401, 403))
def config(_ops: OpsDep, settings: SettingsDep) -> dict[str, Any]:
    return tool_config(settings.public_base_url)


@router.get("/grades", summary="Grade passback state (failed ones first to look at)", responses=error_responses(401, 403))
def grades(
    _ops: OpsDep, session: SessionDep,
    status: Annotated[LtiGradeStatus | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    q = select(LtiGrade).order_by(LtiGrade.created_at.desc()).limit(limit)
    if status is not None:
        q = q.where(LtiGrade.status == status)
    return [{
        "id": str(g.id), "submission_id": str(g.submission_id), "status": g.status.value, "user_id": g.user_id,
        "lineitem_url": g.lineitem_url, "score_given": g.score_given, "attempts": g.attempts,
        "last_status_code": g.last_status_code, "last_error": g.last_error,
        "delivered_at": iso(g.delivered_at),  # UTC with offset, also from SQLite
    } for g in session.scalars(q)]


@router.get("/courses/{course_id}/roster", summary="The course's roster from the LMS (NRPS) with each learner's latest score",
            responses=error_responses(401, 403, 404))
def roster(course_id: str, principal: ReaderDep, session: SessionDep) -> dict[str, Any]:
    tenant_id, _courses = principal.scope(course_id=course_id)
    return course_roster(session, tenant_id, course_id)
