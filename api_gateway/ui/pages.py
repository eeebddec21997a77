"""The teachers' pages under /ui: sign-in, course, learner, recording (with its audio) and ops.

Server-rendered with Jinja2; tables, sorting and paging are plain links and forms, so they work
without JavaScript. The learner chart is drawn by the vendored Chart.js from data embedded as
JSON in the page (with the same numbers in a table beside it). Every page is read through the
JSON API's `Principal` (see access.py).
"""

from __future__ import annotations

import json
import math
import mimetypes
import uuid
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api_gateway.deps import ServicesDep, SessionDep, SettingsDep, StoreDep
from api_gateway.errors import ApiError
from api_gateway.ui import sessions
from api_gateway.ui.access import OpsViewerDep, PageRefused, ViewerDep, parse_uuid
from api_gateway.ui.words import BANDS, band, failure_text, sparkline_points
from db import teacher_views as tv
from db.models import Adapter, AdapterStatus, Submission, SubmissionStatus, utcnow
from db.queries import HistoryFilter, learner_aggregates, learner_history
from db.results import SENTENCE_ASPECTS, as_utc, iso, load_submission, submission_result
from fleet.storage import ObjectNotFound, StorageError

HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def templates():
    """Jinja2 loads with the first page (about 9 MiB): a gateway that only takes webhooks and API
    calls never pays for it."""
    from fastapi.templating import Jinja2Templates

    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["band"] = band
    t.env.filters["fmt1"] = lambda v: "–" if v is None else f"{v:.1f}"
    t.env.filters["when"] = lambda v: "–" if v is None else as_utc(v).strftime("%Y-%m-%d %H:%M UTC")
    t.env.globals["BANDS"] = BANDS
    return t

router = APIRouter(prefix="/ui", include_in_schema=False)
PER_PAGE = 50
HISTORY_PAGE = 50
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".opus": "audio/ogg",
               ".flac": "audio/flac", ".webm": "audio/webm", ".m4a": "audio/mp4"}


SECURITY_HEADERS = {
    # Everything the pages load is served from here (vendored); no inline script or style.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page(request: Request, name: str, viewer: Any = None, status: int = 200, **ctx: Any) -> HTMLResponse:
    """A rendered template with the pages' security headers (scores are private: no caching)."""
    response = templates().TemplateResponse(request, name, {"viewer": viewer, **ctx}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def safe_next(target: str | None) -> str:
    """Only a path inside /ui may be a redirect target (no open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


MAX_FORM_BYTES = 16 * 1024


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded form (the pages' forms are tiny), refused past MAX_FORM_BYTES without reading on."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageRefused(413, "This form is too large.")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


# ---- sign-in ---------------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return login_page(request, safe_next(next), None)


def login_page(request: Request, nxt: str, error: str | None, status: int = 200) -> HTMLResponse:
    """The sign-in form with a fresh double-submit CSRF token (cookie + hidden field)."""
    token = sessions.login_csrf_token()
    response = page(request, "login.html", next=nxt, error=error, csrf_token=token, status=status)
    sessions.set_login_csrf(response, request, token)
    return response


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    fields = await form_fields(request)
    nxt = safe_next(fields.get("next"))
    if not sessions.same_origin(request) or not sessions.tokens_match(
        request.cookies.get(sessions.LOGIN_CSRF_COOKIE), fields.get("csrf_token")
    ):
        raise PageRefused(403, "The sign-in form expired or came from another site. Open the sign-in page again.")
    started = await run_in_threadpool(sessions.sign_in, session, fields.get("api_key", ""))
    if started is None:
        return login_page(request, nxt, "That key is unknown, revoked, or not a teacher or operator key.", 401)
    response = RedirectResponse(nxt, status_code=303)
    sessions.set_session_cookie(response, request, started[0])
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    fields = await form_fields(request)
    if not sessions.same_origin(request) or not sessions.tokens_match(viewer.csrf_token, fields.get("csrf_token")):
        raise PageRefused(403, "This form expired or came from another site.")
    await run_in_threadpool(sessions.sign_out, session, request)
    response = RedirectResponse("/ui/login", status_code=303)
    sessions.clear_session_cookie(response, request)
    return response


# ---- home ------------------------------------------------------------------------------------
@router.get("", include_in_schema=False)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
def home(request: Request, viewer: ViewerDep, session: SessionDep) -> HTMLResponse:
    tenant, courses = viewer.scoped(lambda: viewer.principal.scope())
    return page(request, "home.html", viewer, courses=tv.courses_of(session, tenant_id=tenant, courses=courses))


# ---- course ----------------------------------------------------------------------------------
@router.get("/courses/{course_id:path}")
def course_page(
    request: Request, course_id: str, viewer: ViewerDep, session: SessionDep,
    sort: str = "learner", dir: str = "asc", page_no: int = 1, tenant_id: str | None = None,
) -> HTMLResponse:
    tenant_q = parse_uuid(tenant_id, status=400, what="tenant")
    tenant, _ = viewer.scoped(lambda: viewer.principal.scope(tenant_id=tenant_q, course_id=course_id))
    sort = sort if sort in tv.SORT_KEYS else "learner"
    descending = dir == "desc"
    course = request.app.state.ui_course_cache.course(session, course_id, tenant_id=tenant)
    ordered = course.ordered(sort, descending)
    pages = max(1, math.ceil(len(ordered) / PER_PAGE))
    page_no = min(max(1, page_no), pages)
    shown = ordered[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]
    sparks = tv.sparklines(session, course_id, shown, tenant_id=tenant)

    def link(**changes: Any) -> str:
        params = {"sort": sort, "dir": "desc" if descending else "asc", "page_no": page_no}
        if tenant_q:
            params["tenant_id"] = str(tenant_q)
        params.update(changes)
        return f"/ui/courses/{quote(course_id, safe='')}?{urlencode(params)}"

    def learner_link(r: tv.LearnerRow) -> str:
        q = {"course_id": course_id}
        if viewer.is_ops:
            q["tenant_id"] = str(r.tenant_id)
        return f"/ui/learners/{quote(r.learner_id, safe='')}?{urlencode(q)}"

    columns = [("learner", "Learner"), ("recordings", "Recordings"), ("last_at", "Last recording")]
    columns += [(f"latest_{a}", f"Latest {a}") for a in tv.COURSE_ASPECTS]
    columns += [(f"mean_{a}", f"Mean {a}") for a in tv.COURSE_ASPECTS]
    return page(
        request, "course.html", viewer, course_id=course_id, rows=shown, flagged=course.flagged,
        total_learners=len(course.rows), sparks=sparks,
        page_no=page_no, pages=pages, sort=sort, descending=descending, columns=columns, link=link,
        learner_link=learner_link, aspects=tv.COURSE_ASPECTS, spark=sparkline_points, iso=iso,
        show_tenant=viewer.is_ops,
    )


# ---- learner ---------------------------------------------------------------------------------
@router.get("/learners/{learner_id:path}")
def learner_page(
    request: Request, learner_id: str, viewer: ViewerDep, session: SessionDep,
    course_id: str | None = None, tenant_id: str | None = None, cursor: str | None = None,
) -> HTMLResponse:
    from api_gateway.routes.learners import (  # the JSON API's own cursor
        decode_cursor,
        encode_cursor,
    )

    course_id = course_id or None
    tenant_q = parse_uuid(tenant_id, status=400, what="tenant")
    tenant, courses = viewer.scoped(lambda: viewer.principal.scope(tenant_id=tenant_q, course_id=course_id))
    flt = HistoryFilter(learner_id=learner_id, tenant_id=tenant, courses=courses, course_id=course_id)
    after = viewer.scoped(lambda: decode_cursor(cursor)) if cursor else None
    history, next_key = learner_history(session, flt, limit=HISTORY_PAGE, after=after, reference_text=True)
    if not history and after is None:
        raise PageRefused(404, "No recordings of this learner in your courses.")
    points = tv.learner_series(session, flt)
    chart = {
        "labels": [p["at"].strftime("%Y-%m-%d %H:%M") for p in points],
        "series": [{"aspect": a, "values": [p[a] for p in points]} for a in tv.CHART_ASPECTS],
    }
    next_link = None
    if next_key is not None:
        q = {k: v for k, v in (("course_id", course_id), ("tenant_id", tenant_id)) if v}
        q["cursor"] = encode_cursor(next_key)
        next_link = f"/ui/learners/{quote(learner_id, safe='')}?{urlencode(q)}"
    return page(
        request, "learner.html", viewer, learner_id=learner_id, course_id=course_id, history=history,
        aggregates=learner_aggregates(session, flt), aspects=SENTENCE_ASPECTS, points=points,
        chart_json=json.dumps(chart, separators=(",", ":")).replace("</", "<\\/"),
        practice=tv.practice_list(session, flt), low_at=tv.LOW_AT, next_link=next_link, iso=iso,
        first_page=after is None,
    )


# ---- recording -------------------------------------------------------------------------------
def visible_submission(viewer: Any, session: Any, submission_id: str) -> Submission:
    """The submission if this viewer's key could read it from /v1/submissions/{id}; else 404."""
    sid = parse_uuid(submission_id, what="recording")
    sub = load_submission(session, sid) if sid else None
    if sub is None or not viewer.principal.can_see(sub):
        raise PageRefused(404, "No such recording in your courses.")
    return sub


@router.get("/submissions/{submission_id}")
def submission_page(request: Request, submission_id: str, viewer: ViewerDep, session: SessionDep) -> HTMLResponse:
    sub = visible_submission(viewer, session, submission_id)
    result = submission_result(sub)
    failed = sub.status is SubmissionStatus.failed
    return page(
        request, "submission.html", viewer, sub=sub, r=result, aspects=SENTENCE_ASPECTS,
        failure=failure_text(sub.error_code) if failed else None,
        audio_url=f"/ui/submissions/{sub.id}/audio",
    )


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range, or None for the whole body."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    start_s, _, end_s = header[6:].strip().partition("-")
    try:
        if start_s == "":
            n = int(end_s)
            return (max(0, size - n), size - 1) if n > 0 else None
        start = int(start_s)
        end = min(int(end_s), size - 1) if end_s else size - 1
    except ValueError:
        return None
    return (start, end) if 0 <= start <= end else (size, size)  # (size, size): unsatisfiable


@router.get("/submissions/{submission_id}/audio")
def submission_audio(
    request: Request, submission_id: str, viewer: ViewerDep, session: SessionDep, store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """The learner's recording, read by the gateway from storage: the page never holds a credential."""
    sub = visible_submission(viewer, session, submission_id)
    try:
        data = store.get(sub.audio_uri, max_bytes=settings.max_audio_bytes)
    except ObjectNotFound:
        raise PageRefused(404, "The recording's audio is no longer in storage.") from None
    except StorageError as exc:
        raise PageRefused(503, f"The audio could not be read from storage ({exc.code}).") from None
    suffix = Path(sub.audio_uri.split("?", 1)[0]).suffix.lower()
    media = AUDIO_TYPES.get(suffix) or mimetypes.guess_type(sub.audio_uri)[0] or "application/octet-stream"
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"}
    rng = byte_range(request.headers.get("range"), len(data))
    if rng is None:
        return Response(data, media_type=media, headers=headers)
    start, end = rng
    if start >= len(data):
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return Response(data[start:end + 1], status_code=206, media_type=media, headers=headers)


# ---- ops -------------------------------------------------------------------------------------
@router.get("/ops")
async def ops_page(request: Request, viewer: OpsViewerDep, services: ServicesDep, done: str | None = None) -> HTMLResponse:
    from api_gateway.metrics import QUEUES
    from fleet.broker import queue_depth

    def read() -> dict[str, Any]:
        depths: dict[str, int | str] = {}
        for q in QUEUES:
            try:
                n = queue_depth(services.celery, q)
                depths[q] = "unknown" if n is None else n
            except Exception:
                depths[q] = "unreachable"
        with services.sessions() as session:
            counts = tv.status_counts_since(session, utcnow() - timedelta(hours=24))
            jobs = tv.recent_jobs(session)
            adapters = tv.all_adapters(session)
            session.expunge_all()
        return {"depths": depths, "counts": counts, "jobs": jobs, "adapters": adapters}

    data = await run_in_threadpool(read)
    return page(request, "ops.html", viewer, done=done, iso=iso, **data)


def _adapter(session: Any, ref: str) -> Adapter:
    from sqlalchemy import or_, select

    clauses = [Adapter.version == ref]
    try:
        clauses.append(Adapter.id == uuid.UUID(ref))
    except ValueError:
        pass
    row = session.scalar(select(Adapter).where(or_(*clauses)))
    if row is None:
        raise PageRefused(404, "No such adapter.")
    return row


@router.get("/ops/adapters/{adapter}/activate")
def confirm_activation(request: Request, adapter: str, viewer: OpsViewerDep, session: SessionDep) -> HTMLResponse:
    from sqlalchemy import select

    row = _adapter(session, adapter)
    current = session.scalar(select(Adapter).where(
        Adapter.base_model == row.base_model, Adapter.status == AdapterStatus.active))
    kind = "rollback" if row.activated_at is not None else "promotion"
    return page(request, "confirm.html", viewer, adapter=row, current=current, kind=kind, iso=iso)


@router.post("/ops/adapters/{adapter}/activate")
async def activate(request: Request, adapter: str, viewer: OpsViewerDep, session: SessionDep) -> Response:
    from api_gateway.routes.training import (
        activate_adapter,  # the JSON API's own route: same rules
    )

    fields = await form_fields(request)
    if not sessions.same_origin(request) or not sessions.tokens_match(viewer.csrf_token, fields.get("csrf_token")):
        raise PageRefused(403, "This form expired or came from another site. Nothing was changed.")
    if fields.get("confirm") != "yes":
        raise PageRefused(400, "The change was not confirmed. Nothing was changed.")
    view = await run_in_threadpool(lambda: viewer.scoped(lambda: activate_adapter(adapter, viewer.principal, session)))
    return RedirectResponse(f"/ui/ops?{urlencode({'done': view['version']})}", status_code=303)


@router.get("/ops/training-jobs/{job_id}/report.png")
def training_report_png(job_id: str, viewer: OpsViewerDep, session: SessionDep, store: StoreDep) -> Response:
    from api_gateway.routes.training import (
        get_training_report,  # the JSON API's own reader
    )

    jid = parse_uuid(job_id, what="training job")
    try:
        return get_training_report(jid, "png", viewer.principal, session, store)  # type: ignore[arg-type]
    except ApiError as exc:
        raise PageRefused(exc.status_code, exc.message) from None
