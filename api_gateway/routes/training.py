"""Ops routes of the retraining loop: annotation batches, training jobs, the adapter registry.

Only `ops` keys may call them. The work itself happens on the `train` queue; these routes write
rows, commit, then publish tasks by name (as submissions do), and read the rows back for status.
They import no `training_jobs` (nor numpy, soundfile or torch): rows go through `db.training` and
`db.adapters`, job params are checked with `fleet.training_config`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api_gateway.auth import Principal, principal_from_session, require_roles, unauthorized
from api_gateway.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api_gateway.errors import ApiError, error_responses
from db.adapters import RegistryError, activate, list_adapters
from api_gateway.signed_links import check_link, signed_url
from db.models import Adapter, AnnotationBatch, Role, TrainingJob
from db.results import iso
from db.training import add_batch_row, add_job_row, pending_job
from fleet.settings import Settings
from fleet.queue import TRAIN_TASK, VALIDATE_BATCH_TASK, publish
from fleet.storage import StorageError, StorageNotConfigured, StorageUnavailable, parse_uri
from fleet.training_config import ParamsError, TrainingDefaults, resolve_params

log = logging.getLogger(__name__)
OpsDep = Annotated[Principal, Depends(require_roles(Role.ops))]
router = APIRouter(prefix="/v1", tags=["training (ops)"])


def _iso(value) -> str | None:
    """UTC with its offset (`Z`), also for the naive timestamps SQLite hands back."""
    return iso(value)


def batch_view(b: AnnotationBatch) -> dict[str, Any]:
    return {"id": str(b.id), "uri": b.uri, "name": b.name, "status": b.status.value, "n_items": b.n_items,
            "progress": {"checked": b.n_checked, "total": b.n_items}, "n_accepted": b.n_accepted, "n_quarantined": b.n_quarantined, "problems": b.problems,
            "used_by_job_id": str(b.used_by_job_id) if b.used_by_job_id else None,
            "created_at": _iso(b.created_at), "validated_at": _iso(b.validated_at)}


def report_path(job_id: uuid.UUID | str, kind: str) -> str:
    return f"/v1/training-jobs/{job_id}/report.{kind}"


def job_view(j: TrainingJob, settings: Settings) -> dict[str, Any]:
    """The job row; `report_url`/`plot_url` are short-lived signed links a browser can open."""
    return {"id": str(j.id), "engine": j.engine, "status": j.status.value, "trigger": j.trigger, "params": j.params,
            "progress": {"step": j.step, "total_steps": j.total_steps, "epoch": j.epoch},
            "latest_loss": j.latest_loss, "metrics": j.metrics, "error": j.error, "attempts": j.attempts,
            "log": j.log.splitlines()[-50:], "checkpoint_uri": j.checkpoint_uri, "report_uri": j.report_uri,
            "report_url": signed_url(settings, report_path(j.id, "md")) if j.report_uri else None,
            "plot_url": signed_url(settings, report_path(j.id, "png")) if j.report_uri else None,
            "created_at": _iso(j.created_at), "started_at": _iso(j.started_at), "finished_at": _iso(j.finished_at)}


def adapter_view(a: Adapter) -> dict[str, Any]:
    return {"id": str(a.id), "version": a.version, "base_model": a.base_model, "uri": a.uri,
            "status": a.status.value, "metrics": a.metrics,
            "training_job_id": str(a.training_job_id) if a.training_job_id else None,
            "created_at": _iso(a.created_at), "activated_at": _iso(a.activated_at)}


class BatchIn(BaseModel):
    uri: str = Field(min_length=1, max_length=2048, description="Object-storage prefix holding audio + scores.json")
    name: str | None = Field(default=None, max_length=200)


class JobIn(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides, e.g. {\"epochs\": 2, \"simpo\": true}")
    engine: Literal["gop", "qwen2-audio"] | None = Field(
        default=None, description="The engine whose model is trained (gop head or qwen2-audio LoRA); "
                                  "default: the engine this fleet scores with (APA_ENGINE).")


def _publish(celery, task: str, row_id: uuid.UUID) -> None:
    try:
        publish(celery, task, str(row_id))
    except Exception as exc:  # the row is the record: the discovery beat re-publishes stalled rows
        log.warning("could not publish %s %s: %s", task, row_id, exc)


@router.post("/annotation-batches", status_code=202,
             responses={200: {"description": "The URI was registered before: the existing batch"},
                        **error_responses(401, 403, 422, 503)},
             summary="Register an expert-annotated batch; it is validated on the train queue")
def register_annotation_batch(body: BatchIn, _ops: OpsDep, session: SessionDep, store: StoreDep,
                              celery: CeleryDep, response: Response) -> dict[str, Any]:
    """202 with the new `registered` row (its validation task is published; watch `progress` and
    `status` on GET /v1/annotation-batches); 200 with the existing row when the URI is known."""
    try:
        ref = parse_uri(body.uri)
    except StorageError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    if ref.scheme == "s3" and not store.s3_configured:  # the operator's setting, not a fault to retry
        raise ApiError(
            422, StorageNotConfigured.code,
            f"{body.uri}: this service keeps objects in a local folder (APA_STORAGE_BACKEND=local): register a "
            "local folder, or have the operator set APA_STORAGE_BACKEND=s3",
        )
    row, created = add_batch_row(session, body.uri, body.name)
    session.commit()
    if created:
        _publish(celery, VALIDATE_BATCH_TASK, row.id)
    else:
        response.status_code = 200
    view = batch_view(row)
    view["duplicate"] = not created
    return view


@router.get("/annotation-batches", responses=error_responses(401, 403))
def list_annotation_batches(_ops: OpsDep, session: SessionDep) -> list[dict[str, Any]]:
    rows = session.scalars(select(AnnotationBatch).order_by(AnnotationBatch.created_at.desc()).limit(200))
    return [batch_view(b) for b in rows]


@router.post("/training-jobs", status_code=202, responses=error_responses(401, 403, 409, 422),
             summary="Start a training job (parameters override the defaults); one queued/running job at a time")
def start_training_job(body: JobIn, _ops: OpsDep, session: SessionDep, celery: CeleryDep,
                       settings: SettingsDep) -> dict[str, Any]:
    try:
        resolve_params(TrainingDefaults(), body.params)
    except ParamsError as exc:
        raise ApiError(422, "bad_params", str(exc)) from None
    engine = body.engine or settings.effective_engine
    job = add_job_row(session, "manual", dict(body.params), engine)
    if job is None:  # the database allows one queued/running job per engine
        session.rollback()
        pending = pending_job(session, engine)
        what = f"training job {pending.id} is {pending.status.value}" if pending else "a training job is pending"
        raise ApiError(409, "job_pending", f"{what}; wait for it to finish (one queued/running job per engine)")
    session.commit()
    _publish(celery, TRAIN_TASK, job.id)
    return job_view(job, settings)


def _job(session, job_id: uuid.UUID) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no training job {job_id}")
    return job


@router.get("/training-jobs", responses=error_responses(401, 403))
def list_training_jobs(_ops: OpsDep, session: SessionDep, settings: SettingsDep) -> list[dict[str, Any]]:
    rows = session.scalars(select(TrainingJob).order_by(TrainingJob.created_at.desc()).limit(100))
    return [job_view(j, settings) for j in rows]


@router.get("/training-jobs/{job_id}", responses=error_responses(401, 403, 404),
            summary="Status, progress (step of total, epoch), latest loss, evaluation, report links")
def get_training_job(job_id: uuid.UUID, _ops: OpsDep, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return job_view(_job(session, job_id), settings)


def ops_or_signed_link(
    request: Request, job_id: uuid.UUID, kind: str, session: SessionDep, settings: SettingsDep,
    expires: Annotated[int | None, Query(description="Signed link: expiry, Unix seconds")] = None,
    signature: Annotated[str | None, Query(max_length=128, description="Signed link: HMAC-SHA256, hex")] = None,
) -> Principal | None:
    """A valid, unexpired signed link for exactly this report (from `report_url`/`plot_url`), or an
    ops API key. None for a link: it is its own authority and names no caller."""
    if expires is None and signature is None:
        principal = principal_from_session(request, session, settings)
        if principal.role is not Role.ops:
            raise ApiError(403, "role_not_allowed", f"role {principal.role.value} may not do this (allowed: ops)")
        return principal
    refused = check_link(settings, report_path(job_id, kind), expires or 0, signature or "")
    if refused is not None:
        message = ("this link has expired: read the job again for a fresh one" if refused == "link_expired"
                   else "the link's signature does not match")
        raise unauthorized(refused, message, settings.api_key_header)
    return None


@router.get("/training-jobs/{job_id}/report.{kind}", responses=error_responses(401, 403, 404),
            summary="A job's report (md, png, json): with an ops key, or by the signed link in the job's "
            "`report_url`/`plot_url` (no header needed, expires after APA_SIGNED_LINK_TTL_S)")
def get_training_report(job_id: uuid.UUID, kind: str,
                        _ops: Annotated[Principal | None, Depends(ops_or_signed_link)],
                        session: SessionDep, store: StoreDep) -> Response:
    media = {"md": "text/markdown", "png": "image/png", "json": "application/json"}
    job = _job(session, job_id)
    if kind not in media or not job.report_uri:
        raise ApiError(404, "not_found", "no such report for this job")
    uri = job.report_uri.rsplit(".", 1)[0] + f".{kind}"
    try:
        return Response(store.get(uri), media_type=media[kind])
    except StorageError as exc:
        raise ApiError(404 if not isinstance(exc, StorageUnavailable) else 503, exc.code, str(exc)) from None


@router.get("/adapters", responses=error_responses(401, 403))
def list_registered_adapters(_ops: OpsDep, session: SessionDep) -> list[dict[str, Any]]:
    return [adapter_view(a) for a in list_adapters(session)]


@router.post("/adapters/{adapter}/activate", responses=error_responses(401, 403, 404, 409),
             summary="Promote an adapter (by id or version), or roll back to an earlier one")
def activate_adapter(adapter: str, _ops: OpsDep, session: SessionDep) -> dict[str, Any]:
    try:
        row = activate(session, adapter)
        session.commit()
    except RegistryError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "concurrent_activation", "another activation won; read /v1/adapters and retry") from None
    return adapter_view(row)
