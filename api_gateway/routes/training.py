"""Ops routes of the retraining loop: annotation batches, training jobs, the adapter registry.

Only `ops` keys may call them. The work itself happens on the `train` queue; these routes write
rows, commit, then publish (as submissions do), and read the rows back for status. No torch here:
the training_jobs modules imported below are the torch-free ones (batches, job, registry).
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api_gateway.auth import Principal, require_roles
from api_gateway.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api_gateway.errors import ApiError, error_responses
from db.models import Adapter, AnnotationBatch, Role, TrainingJob
from fleet.queue import TRAIN_TASK, publish
from fleet.storage import StorageError, StorageNotConfigured, StorageUnavailable

log = logging.getLogger(__name__)
OpsDep = Annotated[Principal, Depends(require_roles(Role.ops))]
router = APIRouter(prefix="/v1", tags=["training (ops)"])


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def batch_view(b: AnnotationBatch) -> dict[str, Any]:
    return {"id": str(b.id), "uri": b.uri, "name": b.name, "status": b.status.value, "n_items": b.n_items,
            "n_accepted": b.n_accepted, "n_quarantined": b.n_quarantined, "problems": b.problems,
            "used_by_job_id": str(b.used_by_job_id) if b.used_by_job_id else None,
            "created_at": _iso(b.created_at), "validated_at": _iso(b.validated_at)}


def job_view(j: TrainingJob, base_url: str) -> dict[str, Any]:
    return {"id": str(j.id), "status": j.status.value, "trigger": j.trigger, "params": j.params,
            "progress": {"step": j.step, "total_steps": j.total_steps, "epoch": j.epoch},
            "latest_loss": j.latest_loss, "metrics": j.metrics, "error": j.error, "attempts": j.attempts,
            "log": j.log.splitlines()[-50:], "checkpoint_uri": j.checkpoint_uri, "report_uri": j.report_uri,
            "report_url": f"{base_url}/v1/training-jobs/{j.id}/report.md" if j.report_uri else None,
            "plot_url": f"{base_url}/v1/training-jobs/{j.id}/report.png" if j.report_uri else None,
            "created_at": _iso(j.created_at), "started_at": _iso(j.started_at), "finished_at": _iso(j.finished_at)}


def adapter_view(a: Adapter) -> dict[str, Any]:
    return {"id": str(a.id), "version": a.version, "base_model": a.base_model, "uri": a.uri,
            "status": a.status.value, "metrics": a.metrics,
            "training_job_id": str(a.training_job_id) if a.training_job_id else None,
            "created_at": _iso(a.created_at), "activated_at": _iso(a.activated_at)}


class BatchIn(BaseModel):
    uri: str = Field(min_length=1, max_length=2048, description="Object-storage prefix holding audio + scores.json")
    name: str | None = Field(default=None, max_length=200)
    validate_now: bool = Field(default=True, description="false: register now, validate on the next scan")


class JobIn(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides, e.g. {\"epochs\": 2, \"simpo\": true}")


def _publish_job(celery, job_id: uuid.UUID) -> None:
    try:
        publish(celery, TRAIN_TASK, str(job_id))
    except Exception as exc:  # the row is the record: the discovery beat re-publishes queued jobs
        log.warning("could not publish training job %s: %s", job_id, exc)


@router.post("/annotation-batches", status_code=201, responses=error_responses(401, 403, 422, 503),
             summary="Register (and validate) an expert-annotated batch")
def register_annotation_batch(body: BatchIn, _ops: OpsDep, session: SessionDep, store: StoreDep,
                              celery: CeleryDep, response: Response) -> dict[str, Any]:
    from training_jobs.batches import register_batch
    from training_jobs.config import TrainingDefaults
    from training_jobs.job import maybe_trigger

    defaults = TrainingDefaults()
    try:
        row = register_batch(session, store, body.uri, defaults, name=body.name, validate=body.validate_now)
    except StorageNotConfigured as exc:  # the operator's setting, not a fault to retry
        raise ApiError(422, exc.code, f"{exc} ({exc.setting})") from None
    except StorageUnavailable as exc:
        raise ApiError(503, exc.code, str(exc)) from None
    except StorageError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    job = maybe_trigger(session, defaults)
    session.commit()
    if job is not None:
        _publish_job(celery, job.id)
    view = batch_view(row)
    view["triggered_job_id"] = str(job.id) if job is not None else None
    return view


@router.get("/annotation-batches", responses=error_responses(401, 403))
def list_annotation_batches(_ops: OpsDep, session: SessionDep) -> list[dict[str, Any]]:
    rows = session.scalars(select(AnnotationBatch).order_by(AnnotationBatch.created_at.desc()).limit(200))
    return [batch_view(b) for b in rows]


@router.post("/training-jobs", status_code=202, responses=error_responses(401, 403, 422),
             summary="Start a training job (parameters override the defaults)")
def start_training_job(body: JobIn, _ops: OpsDep, session: SessionDep, celery: CeleryDep,
                       settings: SettingsDep) -> dict[str, Any]:
    from training_jobs.config import ParamsError
    from training_jobs.job import create_job

    try:
        job = create_job(session, "manual", body.params)
    except ParamsError as exc:
        raise ApiError(422, "bad_params", str(exc)) from None
    session.commit()
    _publish_job(celery, job.id)
    return job_view(job, settings.public_base_url)


def _job(session, job_id: uuid.UUID) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no training job {job_id}")
    return job


@router.get("/training-jobs", responses=error_responses(401, 403))
def list_training_jobs(_ops: OpsDep, session: SessionDep, settings: SettingsDep) -> list[dict[str, Any]]:
    rows = session.scalars(select(TrainingJob).order_by(TrainingJob.created_at.desc()).limit(100))
    return [job_view(j, settings.public_base_url) for j in rows]


@router.get("/training-jobs/{job_id}", responses=error_responses(401, 403, 404),
            summary="Status, progress (step of total, epoch), latest loss, evaluation, report links")
def get_training_job(job_id: uuid.UUID, _ops: OpsDep, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return job_view(_job(session, job_id), settings.public_base_url)


@router.get("/training-jobs/{job_id}/report.{kind}", responses=error_responses(401, 403, 404))
def get_training_report(job_id: uuid.UUID, kind: str, _ops: OpsDep, session: SessionDep, store: StoreDep) -> Response:
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
    from training_jobs.registry import list_adapters

    return [adapter_view(a) for a in list_adapters(session)]


@router.post("/adapters/{adapter}/activate", responses=error_responses(401, 403, 404, 409),
             summary="Promote an adapter (by id or version), or roll back to an earlier one")
def activate_adapter(adapter: str, _ops: OpsDep, session: SessionDep) -> dict[str, Any]:
    from training_jobs.registry import RegistryError, activate

    try:
        row = activate(session, adapter)
        session.commit()
    except RegistryError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "concurrent_activation", "another activation won; read /v1/adapters and retry") from None
    return adapter_view(row)
