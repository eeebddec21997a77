"""Broker probes for `/readyz`, `/metrics` and the sweeper: is it reachable, how deep is a queue.

Each transport answers the depth question its own way: Redis keeps a queue as a list (plus one
list per priority step), AMQP reports a message count on a passive `queue_declare`, and kombu's
filesystem transport keeps one file per message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from celery import Celery

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
# kombu's Redis transport: priority steps 0, 3, 6, 9; step 0 is the plain queue name.
_REDIS_PRIORITY_SEP = "\x06\x16"
_REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


def broker_scheme(celery: Celery) -> str:
    return urlsplit(str(celery.conf.broker_url or "")).scheme


def ping_broker(celery: Celery) -> None:
    """Raises if the broker cannot be reached within a few seconds."""
    scheme = broker_scheme(celery)
    if scheme == "filesystem":
        folder = celery.conf.broker_transport_options.get("data_folder_in")
        if folder and not Path(folder).is_dir():
            raise ConnectionError(f"broker folder {folder} does not exist")
        return
    if scheme in ("redis", "rediss"):
        client = _redis_client(celery)
        try:
            client.ping()
        finally:
            client.close()
        return
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_S)


def queue_depth(celery: Celery, queue: str) -> int | None:
    """Messages waiting in `queue`, or None when this transport cannot tell."""
    scheme = broker_scheme(celery)
    if scheme in ("redis", "rediss"):
        client = _redis_client(celery)
        try:
            pipe = client.pipeline()
            for step in _REDIS_PRIORITY_STEPS:
                pipe.llen(queue if step == 0 else f"{queue}{_REDIS_PRIORITY_SEP}{step}")
            return int(sum(pipe.execute()))
        finally:
            client.close()
    if scheme in ("amqp", "amqps", "pyamqp"):
        return _amqp_depth(celery, queue)
    if scheme == "filesystem":
        folder = celery.conf.broker_transport_options.get("data_folder_in")
        if not folder or not Path(folder).is_dir():
            return 0
        suffix = f"{queue}.msg"
        return sum(1 for p in Path(folder).iterdir() if p.name.partition(".")[2] == suffix)
    return None


def _redis_client(celery: Celery):
    import redis

    return redis.Redis.from_url(
        str(celery.conf.broker_url),
        socket_connect_timeout=PROBE_TIMEOUT_S,
        socket_timeout=PROBE_TIMEOUT_S,
    )


def _amqp_depth(celery: Celery, queue: str) -> int:
    from amqp.exceptions import NotFound

    with celery.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_S)
        channel = conn.channel()
        try:
            _name, count, _consumers = channel.queue_declare(queue=queue, passive=True)
            return int(count)
        except NotFound:  # nothing ever declared it: no message waits
            return 0
        finally:
            try:
                channel.close()
            except Exception:  # the server closes a channel after a failed passive declare
                pass
