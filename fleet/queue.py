"""The Celery application, shared by the publishers (gateway) and the workers.

It names tasks by string so the gateway can publish without importing the worker code (and with
it torch). The rules come from DESIGN.md and Celery's issue history: late acks with reject on
worker loss, prefetch 1, hard time limits below the Redis visibility timeout, one queue per kind
of work. The task code registers itself on this app in `workers/` and `training_jobs/`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from celery import Celery

from fleet.settings import Settings, get_settings

SCORE_QUEUE, DELIVER_QUEUE, TRAIN_QUEUE = "score", "deliver", "train"
SCORE_TASK = "apa.score"
DELIVER_TASK = "apa.deliver"
DELIVER_DUE_TASK = "apa.deliver_due"
SWEEP_TASK = "apa.sweep"
TRAIN_TASK = "apa.train"
DISCOVER_BATCHES_TASK = "apa.discover_batches"
VALIDATE_BATCH_TASK = "apa.validate_batch"
LTI_GRADE_TASK = "apa.lti_grade"
LTI_GRADES_DUE_TASK = "apa.lti_grades_due"

ROUTES = {
    SCORE_TASK: {"queue": SCORE_QUEUE},
    DELIVER_TASK: {"queue": DELIVER_QUEUE},
    DELIVER_DUE_TASK: {"queue": DELIVER_QUEUE},
    SWEEP_TASK: {"queue": DELIVER_QUEUE},
    TRAIN_TASK: {"queue": TRAIN_QUEUE},
    # Discovery and validation decode audio for minutes: they run on the training workers, never
    # beside the callbacks and the sweeper (a long one there blocks deliveries).
    DISCOVER_BATCHES_TASK: {"queue": TRAIN_QUEUE},
    VALIDATE_BATCH_TASK: {"queue": TRAIN_QUEUE},
    LTI_GRADE_TASK: {"queue": DELIVER_QUEUE},
    LTI_GRADES_DUE_TASK: {"queue": DELIVER_QUEUE},
}
WORKER_TASK_MODULES = ("workers.tasks", "training_jobs.tasks", "workers.lti_tasks")
"""Modules that register tasks on the worker app, named (not imported) so fleet stays at the bottom."""


def broker_folder(settings: Settings) -> Path:
    return (settings.var_dir / "broker").resolve()


def make_celery(settings: Settings) -> Celery:
    app = Celery("apa_fleet", broker=settings.broker_url, set_as_current=False)
    transport_options: dict = {}
    scheme = urlsplit(settings.broker_url).scheme
    if scheme == "filesystem":
        folder = broker_folder(settings)
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
        # kombu's own filesystem transport lets a consumer read a message file while it is being
        # written (JSONDecodeError, lost message); fleet.fs_broker writes atomically.
        from fleet.fs_broker import TRANSPORT_PATH

        app.conf.broker_transport = TRANSPORT_PATH
    elif scheme in ("redis", "rediss"):
        transport_options = {"visibility_timeout": settings.redis_visibility_timeout_s}
    hard_limit = min(900, settings.redis_visibility_timeout_s - 60)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=hard_limit,
        task_soft_time_limit=hard_limit - 30,
        task_ignore_result=True,
        task_routes=ROUTES,
        task_default_queue=SCORE_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        # A pool child must only signal "up" after its initializer; the model now loads in the
        # background (workers/celery_app.py), but start-up still imports and connects, and a
        # parent that kills slow children kills every replacement forever (issue 8, defect 1).
        worker_proc_alive_timeout=settings.worker_proc_alive_timeout_s,
        beat_schedule={
            "sweep-stuck-submissions": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_s},
            "deliver-due-callbacks": {"task": DELIVER_DUE_TASK, "schedule": settings.deliver_poll_interval_s},
            "discover-annotation-batches": {"task": DISCOVER_BATCHES_TASK, "schedule": settings.discover_interval_s},
            "lti-grade-passback": {"task": LTI_GRADES_DUE_TASK, "schedule": settings.deliver_poll_interval_s},
        },
    )
    return app


@lru_cache(maxsize=1)
def worker_app() -> Celery:
    """The one Celery app of a worker process, shared by `workers` and `training_jobs` (neither
    imports the other): configured from the environment, listing both task modules."""
    app = make_celery(get_settings())
    app.conf.include = list(WORKER_TASK_MODULES)
    return app


def publish(app: Celery, task: str, *args: object, countdown: float | None = None) -> None:
    """Send a task by name; raises kombu's OperationalError if the broker cannot be reached."""
    app.send_task(task, args=list(args), countdown=countdown, retry=True,
                  retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
