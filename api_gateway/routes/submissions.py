"""`POST /v1/submissions` (signed LMS webhook), `GET /v1/submissions/{id}` and the look-up by the
LMS's own id, `GET /v1/submissions?lms_submission_id=`."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import select

from api_gateway.auth import ReaderDep, SessionOpener, authenticate_with, unauthorized
from api_gateway.credentials import NeedsDatabase, TenantView, no_database
from api_gateway.deps import Services, ServicesDep, SessionDep, SettingsDep
from api_gateway.errors import ApiError, error_responses
from api_gateway.intake import accept_submission
from api_gateway.schemas import SubmissionAccepted, SubmissionIn, SubmissionList, SubmissionOut, inline_schema
from api_gateway.webhooks import WebhookError, verify_webhook
from db.models import Role, Submission
from db.results import delivery_state, load_submission, submission_result

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/submissions", tags=["submissions"])

MAX_BODY_BYTES = 64 * 1024


def resolve_tenant(
    request: Request, services: Services, tenant: str | None, open_session: SessionOpener | None = None
) -> TenantView:
    """The tenant a delivery comes from: by its `lms` API key, else by `?tenant=` (cached, issue 10)."""
    header = services.settings.api_key_header
    opener = open_session or services.sessions
    found_key = authenticate_with(request, opener, header)
    found: TenantView | None
    if found_key is not None:
        key, found = found_key
        if key.role is not Role.lms:
            raise ApiError(403, "role_not_allowed", f"only lms keys submit recordings, not {key.role.value} keys")
        if found is not None and tenant is not None and tenant not in (found.name, str(found.id)):
            raise unauthorized("tenant_mismatch", "?tenant= names another tenant than the API key's", header)
    elif tenant:
        found = services.credentials.tenant(tenant, opener)
    else:
        raise unauthorized("missing_credentials", f"send an lms API key in {header} or ?tenant=<name>", header)
    if found is None or not found.active:
        raise unauthorized("unknown_tenant", "no active tenant matches these credentials", header)
    return found


async def webhook_tenant(
    request: Request,
    services: ServicesDep,
    tenant: Annotated[
        str | None,
        Query(description="Tenant name or id, for an LMS that signs but cannot send an API key."),
    ] = None,
) -> TenantView:
    """`resolve_tenant` on the event loop when the cache can answer, in a thread when it must query."""
    try:
        return resolve_tenant(request, services, tenant, no_database)
    except NeedsDatabase:
        return await run_in_threadpool(resolve_tenant, request, services, tenant)


async def webhook_body(request: Request) -> bytes:
    """The raw body, refused past MAX_BODY_BYTES without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)


@dataclass
class SignedDelivery:
    tenant: TenantView
    webhook_id: str
    body: bytes


async def signed_delivery(
    request: Request,
    settings: SettingsDep,
    tenant: Annotated[TenantView, Depends(webhook_tenant)],
    body: Annotated[bytes, Depends(webhook_body)],
) -> SignedDelivery:
    try:
        msg_id = verify_webhook(
            tenant.webhook_secret, body, request.headers, tolerance_s=settings.webhook_tolerance_s
        )
    except WebhookError as exc:
        raise unauthorized(exc.code, exc.message, settings.api_key_header) from None
    return SignedDelivery(tenant, msg_id, body)


def parse_payload(body: bytes) -> SubmissionIn:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_json", "the body must be a JSON object")
    try:
        return SubmissionIn.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors)
        raise ApiError(
            422, "invalid_request", summary,
            errors=[{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors],
        ) from None


@router.post(
    "",
    status_code=202,
    response_model=SubmissionAccepted,
    summary="Submit a recording to score (Standard Webhooks signed)",
    responses={
        200: {"model": SubmissionAccepted, "description": "A repeated delivery: the existing submission"},
        **error_responses(401, 403, 409, 413, 422, 503),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(SubmissionIn)}}}},
)
async def create_submission(
    response: Response,
    delivery: Annotated[SignedDelivery, Depends(signed_delivery)],
    services: ServicesDep,
) -> SubmissionAccepted:
    """One thread-pool hop for the blocking work; no session is held by the request itself."""
    settings = services.settings
    payload = parse_payload(delivery.body)
    accepted = await run_in_threadpool(
        accept_submission, services.sessions, store=services.store, celery=services.celery, settings=settings,
        tenant=delivery.tenant, webhook_id=delivery.webhook_id, payload=payload,
    )
    status_url = f"{settings.public_base_url.rstrip('/')}/v1/submissions/{accepted.id}"
    response.status_code = 202 if accepted.created else 200
    response.headers["Location"] = status_url
    return SubmissionAccepted(
        id=str(accepted.id), status=accepted.status.value, status_url=status_url, duplicate=not accepted.created
    )


@router.get(
    "/{submission_id}",
    response_model=SubmissionOut,
    summary="A submission with its status and scores at every granularity",
    responses=error_responses(401, 403, 404),
)
def get_submission(submission_id: str, principal: ReaderDep, session: SessionDep) -> dict[str, Any]:
    not_found = ApiError(404, "not_found", "no such submission")
    try:
        sid = uuid.UUID(submission_id)
    except ValueError:
        raise not_found from None
    sub = load_submission(session, sid)
    if sub is None or not principal.can_see(sub):
        raise not_found
    return {**submission_result(sub), "delivery": delivery_state(session, sub.id)}


@router.get(
    "",
    response_model=SubmissionList,
    summary="Find submissions by the LMS's own id (`submission_id` in the webhook body)",
    responses=error_responses(401, 403),
)
def find_submissions(
    principal: ReaderDep,
    session: SessionDep,
    lms_submission_id: Annotated[
        str, Query(min_length=1, max_length=200, description="The id the LMS sent as `submission_id`.")
    ],
) -> dict[str, Any]:
    """An `lms` key finds its own tenant's submission (at most one: the id is unique per tenant);
    a teacher only within its courses; ops across tenants. An empty list, not 404, when none."""
    tenant_id, courses = principal.scope()
    query = select(Submission.id).where(Submission.lms_submission_id == lms_submission_id)
    if tenant_id is not None:
        query = query.where(Submission.tenant_id == tenant_id)
    if courses is not None:
        query = query.where(Submission.course_id.in_(courses))
    items = []
    for sid in session.scalars(query.order_by(Submission.created_at).limit(50)).all():
        sub = load_submission(session, sid)
        if sub is not None and principal.can_see(sub):
            items.append({**submission_result(sub), "delivery": delivery_state(session, sub.id)})
    return {"items": items}
