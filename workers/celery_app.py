"""The worker-side Celery app: fleet.queue's configuration plus the task modules.

Start a worker with `apa-fleet worker --queues score` (or `celery -A workers.celery_app worker`).
The model is loaded once per worker process after fork, never in the parent, and in a background
thread of the child: Celery kills a child that has not signalled "up" within
`worker_proc_alive_timeout`, and a 7B model takes 10-14 s to load, so loading inside
`worker_process_init` made the parent kill every replacement child forever (issue 8, defect 1).
The first task waits for the load; the child's heartbeat (workers/heartbeat.py) says `starting`
until the model is in memory, `ready` after, and `failed` (then the child exits, so the parent
starts another) when it cannot be loaded.
"""

from __future__ import annotations

import logging
import os
import threading

from celery.signals import worker_process_init, worker_process_shutdown

from fleet.queue import worker_app
from fleet.settings import get_settings
from fleet.worker_health import FAILED, READY

app = worker_app()

log = logging.getLogger(__name__)
_heartbeat = None
MODEL_LOAD_FAILED_EXIT = 70


def _pool_index() -> int:
    from billiard.process import current_process

    return int(getattr(current_process(), "index", 0) or 0)


def _load_model(heartbeat) -> None:
    from workers.resources import model_pool

    try:
        model_pool().model()
    except BaseException as exc:  # noqa: BLE001 - any load failure ends this child
        log.exception("could not load the scoring model; this pool process exits")
        heartbeat.set_state(FAILED, f"model load failed: {type(exc).__name__}: {exc}"[:2000])
        os._exit(MODEL_LOAD_FAILED_EXIT)
    heartbeat.set_state(READY)
    log.info("model loaded in worker process %d", os.getpid())


@worker_process_init.connect
def _start_child(sender=None, **_kwargs) -> None:
    """Start the heartbeat and, on score workers, the model load; return at once."""
    global _heartbeat
    from workers.heartbeat import Heartbeat
    from workers.resources import sessions

    settings = get_settings()
    node = os.environ.get("APA_WORKER_NAME") or str(sender or "worker")
    queues = os.environ.get("APA_WORKER_QUEUES", "")
    _heartbeat = Heartbeat(settings, node=node, queues=queues, index=_pool_index(), sessions=sessions())
    preload = os.environ.get("APA_WORKER_PRELOAD_MODEL", "0") == "1"
    if not preload:
        _heartbeat.state = READY
    _heartbeat.start()
    if preload:
        threading.Thread(target=_load_model, args=(_heartbeat,), name="apa-model-load", daemon=True).start()


@worker_process_shutdown.connect
def _stop_child(**_kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
