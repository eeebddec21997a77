"""Celery tasks: thin wrappers that run the round/sweep/delivery logic and publish follow-ups."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import OperationalError

from fleet.broker import queue_depth
from fleet.queue import DELIVER_DUE_TASK, DELIVER_TASK, SCORE_QUEUE, SCORE_TASK, SWEEP_TASK, publish
from workers import resources
from workers.celery_app import app
from workers.delivery import deliver, due_deliveries, outcome_line
from workers.egress import callback_client
from workers.scoring import score_round
from workers.sweeper import sweep

log = logging.getLogger(__name__)


def _publish_deliveries(ids) -> None:
    for delivery_id in ids:
        publish(app, DELIVER_TASK, str(delivery_id))


@app.task(name=SCORE_TASK, bind=True, autoretry_for=(OperationalError,), retry_backoff=True,
          retry_backoff_max=300, retry_jitter=True, max_retries=8)
def score(self, submission_id: str, audio_uri: str | None = None) -> dict:
    """`audio_uri` is a hint (the gateway's publish names it): its GET starts while the row is claimed."""
    pool = resources.model_pool()
    pool.model()  # wait for the model (loading after fork) before claiming anything
    report = score_round(
        uuid.UUID(submission_id), settings=resources.settings(), sessions=resources.sessions(),
        store=resources.store(), pool=pool, audio_hint=audio_uri, fetcher=resources.fetcher(),
    )
    _publish_deliveries(report.deliveries)
    if report.wake_up is not None:  # at most one follow-up per consumed message: no retry storm
        sub_id, countdown = report.wake_up
        publish(app, SCORE_TASK, str(sub_id), countdown=countdown)
    return {"scored": len(report.scored), "failed": len(report.failed), "retry": len(report.retry),
            "ms": {k: round(getattr(report, f"{k}_ms"), 1) for k in ("wait", "claim", "fetch", "model", "save")}}


@app.task(name=DELIVER_TASK, bind=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=8)
def deliver_task(self, delivery_id: str) -> str:
    """One try; returns what happened to the callback (Celery logs it after "succeeded")."""
    allow_loopback = resources.settings().callback_allow_loopback_http
    with resources.sessions()() as s, callback_client(allow_loopback=allow_loopback) as http:
        retry_in = deliver(s, uuid.UUID(delivery_id), http, allow_loopback_http=allow_loopback,
                           policy=resources.settings().retry_policy(delivery=True))
        outcome = outcome_line(s, uuid.UUID(delivery_id), retry_in)
    if retry_in is not None:
        publish(app, DELIVER_TASK, delivery_id, countdown=retry_in)
    return outcome


@app.task(name=DELIVER_DUE_TASK)
def deliver_due() -> int:
    """Beat: sends outbox rows whose message was lost (the outbox row is the record)."""
    with resources.sessions()() as s:
        ids = due_deliveries(s)
    _publish_deliveries(ids)
    return len(ids)


def _score_queue_empty() -> bool:
    try:
        depth = queue_depth(app, SCORE_QUEUE)
    except Exception:  # cannot tell: behave as if messages were lost (duplicates are no-ops)
        log.warning("sweeper: could not read the score queue depth", exc_info=True)
        return True
    return depth in (0, None)


@app.task(name=SWEEP_TASK)
def sweep_task() -> dict:
    cfg = resources.settings()
    with resources.sessions()() as s:
        report = sweep(s, republish_after_s=cfg.republish_after_s, stuck_after_s=cfg.stuck_after_s,
                       max_attempts=cfg.max_attempts, republish_queued=_score_queue_empty())
    for sub_id in report.republished:
        publish(app, SCORE_TASK, str(sub_id))
    _publish_deliveries(report.deliveries)
    if report.republished or report.dead_lettered:
        log.warning("sweeper: re-published %d, dead-lettered %d", len(report.republished), len(report.dead_lettered))
    return {"republished": len(report.republished), "dead_lettered": len(report.dead_lettered)}
