"""The LTI tool's browser-facing routes: `/lti/jwks`, `/lti/login`, `/lti/launch`, the deep-linking
form, the recording page, its upload route and the result it polls.

Pages are addressed by a per-launch token in the path (LMSs frame tools in iframes where
third-party cookies are often blocked, so the page cannot rely on a cookie after the launch);
the token is random, stored hashed, and expires with `APA_LTI_LAUNCH_TTL_S`.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from api_gateway.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api_gateway.errors import ApiError, error_responses
from api_gateway.lti import claims as c
from api_gateway.lti import pages
from api_gateway.lti.deep_linking import deep_linking_response, resource_link_item
from api_gateway.lti.errors import LaunchRefused
from api_gateway.lti.launches import (
    BROWSER_COOKIE,
    begin_login,
    complete_launch,
    custom,
    find_launch,
    launch_url,
)
from api_gateway.lti.platform_keys import platform_keys
from api_gateway.lti.recordings import accept_recording, media_type
from db.lti import published_keys, signing_key
from db.models import LtiGrade, LtiRegistration, Submission
from db.results import load_submission, submission_result
from fleet.settings import Settings
from pronunciation.errors import PronunciationInputError
from pronunciation.lexicon import build_reference

log = logging.getLogger(__name__)
router = APIRouter(prefix="/lti", tags=["lti"])
MAX_FORM_BYTES = 64 * 1024
RAW_BODY_PATHS = (r"/lti/s/[^/]+/recordings",)
"""Routes whose body is raw audio: the edge's NUL check skips them (NUL bytes are ordinary in audio;
`upload_recording` takes no text from the body, checks the media type and bounds the size)."""


def refused(exc: LaunchRefused) -> HTMLResponse:
    log.info("LTI request refused: %s: %s", exc.code, exc.message)
    return HTMLResponse(pages.refusal_page(exc.code, exc.message), status_code=exc.status_code,
                        headers={"X-LTI-Error": exc.code})


async def form_fields(request: Request) -> dict[str, str]:
    """Query parameters plus an urlencoded body (OIDC and LTI messages are form posts)."""
    fields = dict(request.query_params)
    if request.method == "POST":
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise LaunchRefused("body_too_large", "the form is too large", 413)
        fields.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return fields


def _cookie_secure(settings: Settings) -> bool:
    return urlsplit(settings.public_base_url).scheme == "https"


_WHY = {400: "bad login or launch", 401: "signature, state, token or page link not valid, or expired",
        403: "not allowed for this launch", 404: "unknown page link", 413: "form too large",
        422: "the form cannot be accepted", 502: "the platform's key set cannot be read"}


def html_refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the refusals a browser-facing route answers as an HTML page (`refused`).

    The page is for the person in the browser; the code is also in the X-LTI-Error header.
    """
    header = {"X-LTI-Error": {"description": "The refusal's code", "schema": {"type": "string"}}}
    return {code: {"description": f"Refused ({_WHY[code]}): an HTML page says why", "headers": header,
                   "content": {"text/html": {"schema": {"type": "string"}}}} for code in codes}


def redirect(status: int, where: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entry for a route's redirect (its success)."""
    return {status: {"description": f"Redirect to {where}",
                     "headers": {"Location": {"description": where, "schema": {"type": "string"}}}}}


@router.get("/jwks", summary="The tool's public keys (JWKS)")
def jwks(session: SessionDep) -> JSONResponse:
    signing_key(session)  # the first request creates the tool's key if no one ran `lti rotate-key`
    return JSONResponse({"keys": published_keys(session)}, headers={"Cache-Control": "max-age=300"})


@router.get("/login", summary="OIDC third-party login initiation (GET)", response_model=None,
            responses={**redirect(302, "the platform's authorization endpoint"), **html_refusals(400)})
async def login_get(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return await login(request, session, settings)


@router.post("/login", summary="OIDC third-party login initiation (POST)", response_model=None,
             responses={**redirect(302, "the platform's authorization endpoint"), **html_refusals(400, 413)})
async def login_post(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return await login(request, session, settings)


async def login(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        params = await form_fields(request)
        redirect = await run_in_threadpool(begin_login, session, settings, params, request.cookies.get(BROWSER_COOKIE))
    except LaunchRefused as exc:
        return refused(exc)
    response = RedirectResponse(redirect.url, status_code=302)
    secure = _cookie_secure(settings)
    # SameSite=None (with Secure) so the platform's cross-site form post carries it back to /lti/launch.
    response.set_cookie(BROWSER_COOKIE, redirect.browser_id, max_age=settings.lti_state_ttl_s, httponly=True,
                        secure=secure, samesite="none" if secure else "lax", path="/lti")
    return response


@router.post("/launch", summary="LTI 1.3 launch (id_token form post)", response_model=None,
             responses={**redirect(303, "the launch's page"), **html_refusals(400, 401, 413, 502)})
async def launch(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        form = await form_fields(request)
        keys = platform_keys(settings.lti_jwks_cache_s)
        # database work and the platform's JWKS download: off the event loop
        launched = await run_in_threadpool(complete_launch, session, settings, form,
                                           request.cookies.get(BROWSER_COOKIE), keys)
    except LaunchRefused as exc:
        return refused(exc)
    base = settings.public_base_url.rstrip("/")
    if launched.launch.message_type == c.DEEP_LINKING_REQUEST:
        return RedirectResponse(f"{base}/lti/s/{launched.token}/deep-link", status_code=303)
    return RedirectResponse(f"{base}/lti/s/{launched.token}", status_code=303)


_WRONG_KIND = {
    c.RESOURCE_LINK_REQUEST: ("not_a_recording_launch", "this page belongs to a deep-linking launch"),
    c.DEEP_LINKING_REQUEST: ("not_a_deep_link_launch", "this page belongs to an activity launch"),
}


def launch_of_kind(session: Session, token: str, message_type: str):
    """The launch behind a page link, refused (403) when it was launched for the other kind of page."""
    launch_row = find_launch(session, token)
    if launch_row.message_type != message_type:
        code, message = _WRONG_KIND[message_type]
        raise LaunchRefused(code, message, 403)
    return launch_row


@router.get("/s/{token}", summary="The learner's recording page", response_class=HTMLResponse, response_model=None,
            responses=html_refusals(401, 403, 404))
def recording_page(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        launch_row = launch_of_kind(session, token, c.RESOURCE_LINK_REQUEST)
    except LaunchRefused as exc:
        return refused(exc)
    text = str(custom(launch_row).get("reference_text") or "")
    if not text:
        return HTMLResponse(pages.message_page("Not set up yet", "This activity has no text to read yet: "
                                               "ask the teacher to add it again with the activity picker."))
    title = ((launch_row.claims or {}).get(c.RESOURCE_LINK) or {}).get("title") or "Read aloud"
    base = settings.public_base_url.rstrip("/")
    return HTMLResponse(pages.recording_page(
        title=title, reference_text=text, upload_url=f"{base}/lti/s/{token}/recordings",
        user_name=(launch_row.claims or {}).get("name"),
    ))


async def _audio_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(422, "object_too_large", f"{declared} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(422, "object_too_large", f"the recording is over the limit of {limit} bytes")
    return bytes(body)


@router.post("/s/{token}/recordings", status_code=202, summary="Upload the learner's recording (raw audio body)",
             responses=error_responses(401, 403, 404, 415, 422, 503))
async def upload_recording(
    token: str, request: Request, session: SessionDep, store: StoreDep, celery: CeleryDep, settings: SettingsDep
) -> dict[str, Any]:
    try:
        launch_row = await run_in_threadpool(find_launch, session, token)
    except LaunchRefused as exc:
        raise ApiError(exc.status_code, exc.code, exc.message) from None
    content_type = media_type(request.headers.get("content-type"))
    audio = await _audio_body(request, settings.max_audio_bytes)
    sub = await run_in_threadpool(
        accept_recording, session, launch=launch_row, audio=audio, content_type=content_type,
        store=store, celery=celery, settings=settings,
    )
    base = settings.public_base_url.rstrip("/")
    return {"id": str(sub.id), "status": sub.status.value, "result_url": f"{base}/lti/s/{token}/submissions/{sub.id}"}


@router.get("/s/{token}/submissions/{submission_id}", summary="A recording's result, for the page to poll",
            responses=error_responses(401, 404))
def recording_result(token: str, submission_id: str, session: SessionDep) -> dict[str, Any]:
    try:
        launch_row = find_launch(session, token)
    except LaunchRefused as exc:
        raise ApiError(exc.status_code, exc.code, exc.message) from None
    not_found = ApiError(404, "not_found", "no such recording for this launch")
    try:
        sid = uuid.UUID(submission_id)
    except ValueError:
        raise not_found from None
    sub: Submission | None = load_submission(session, sid)
    if (sub is None or sub.tenant_id != launch_row.tenant_id or sub.learner_id != launch_row.user_id
            or sub.assignment_id != launch_row.resource_link_id):
        raise not_found
    out = submission_result(sub)
    grade = session.query(LtiGrade).filter(LtiGrade.submission_id == sid).one_or_none()
    out["grade"] = None if grade is None else {"status": grade.status.value, "score_given": grade.score_given}
    return out


@router.get("/s/{token}/deep-link", response_class=HTMLResponse, summary="The teacher's activity form", response_model=None,
            responses=html_refusals(401, 403, 404))
def deep_link_form(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        launch_of_kind(session, token, c.DEEP_LINKING_REQUEST)
    except LaunchRefused as exc:
        return refused(exc)
    return HTMLResponse(pages.deep_link_page(f"{settings.public_base_url.rstrip('/')}/lti/s/{token}/deep-link"))


@router.post("/s/{token}/deep-link", response_class=HTMLResponse, summary="Return the activity to the platform",
             responses=html_refusals(401, 403, 404, 413, 422),
             response_model=None)
async def deep_link_submit(token: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        form = await form_fields(request)
    except LaunchRefused as exc:
        return refused(exc)
    return await run_in_threadpool(_deep_link_answer, token, form, session, settings)


def _deep_link_answer(token: str, form: dict[str, str], session: Session, settings: Settings) -> Response:
    """Validate the teacher's form and answer with the signed response (or the form with the error)."""
    try:
        launch_row = launch_of_kind(session, token, c.DEEP_LINKING_REQUEST)
    except LaunchRefused as exc:
        return refused(exc)
    action = f"{settings.public_base_url.rstrip('/')}/lti/s/{token}/deep-link"
    dl_settings = (launch_row.claims or {}).get(c.DL_SETTINGS) or {}
    if "ltiResourceLink" not in (dl_settings.get("accept_types") or []):
        return refused(LaunchRefused("resource_link_not_accepted",
                                     "this placement does not accept activity links (ltiResourceLink)", 422))
    title = (form.get("title") or "Read aloud").strip()[:200]
    text = (form.get("reference_text") or "").strip()
    phones_raw = (form.get("reference_phones") or "").strip()
    try:
        phones = json.loads(phones_raw) if phones_raw else None
        reference = build_reference(text, phones, max_words=settings.max_reference_words)
    except ValueError as exc:
        error = exc.message if isinstance(exc, PronunciationInputError) else f"phones are not valid JSON: {exc}"
        return HTMLResponse(pages.deep_link_page(action, error, title, text, phones_raw), status_code=422)
    registration = session.get(LtiRegistration, launch_row.registration_id)
    del reference  # validated: the learner's page and the worker rebuild it from the same text
    item = resource_link_item(title=title, launch_url=launch_url(settings), reference_text=text,
                              reference_phones=phones)
    return_url, jwt_value = deep_linking_response(session, launch_row, registration, [item])
    return HTMLResponse(pages.autopost_page(return_url, {"JWT": jwt_value}))
