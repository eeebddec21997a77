"""The worker-side Celery app: fleet.queue's configuration plus the task modules.

Start a worker with `apa-fleet worker --queues score` (or `celery -A workers.celery_app worker`).
The model is loaded once per worker process after fork (worker_process_init), never in the parent.
"""

from __future__ import annotations

import logging

from celery.signals import worker_process_init

from fleet.queue import worker_app

app = worker_app()

log = logging.getLogger(__name__)


@worker_process_init.connect
def _load_model_after_fork(**_kwargs) -> None:
    import os

    if os.environ.get("APA_WORKER_PRELOAD_MODEL", "0") == "1":
        from workers.resources import model_pool

        model_pool().model()
        log.info("model loaded in worker process %d", os.getpid())
