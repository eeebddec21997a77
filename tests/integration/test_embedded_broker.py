"""The embedded (filesystem) broker under concurrent publishers: nothing lost, nothing half-read.

kombu's stock filesystem transport creates a message file before writing it, so a polling consumer
could read it empty (`JSONDecodeError` in the deliver worker, and the message gone). Two real
publisher processes race one consumer here through the Celery app's own connection.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from kombu import Exchange, Queue

from fleet.queue import make_celery
from fleet.settings import Settings

PER_PRODUCER = 10
PAYLOAD_PAD = "x" * 4_000_000  # a body this big takes milliseconds to write: a wide window


def _produce(var_dir: str, producer: int) -> None:
    app = make_celery(Settings(var_dir=Path(var_dir)))
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("race")
        for i in range(PER_PRODUCER):
            queue.put({"producer": producer, "i": i, "pad": PAYLOAD_PAD})


def test_concurrent_publishers_lose_and_corrupt_nothing(tmp_path) -> None:
    app = make_celery(Settings(var_dir=tmp_path))
    ctx = multiprocessing.get_context("fork")
    producers = [ctx.Process(target=_produce, args=(str(tmp_path), n)) for n in range(2)]
    received: set[tuple[int, int]] = set()
    errors: list[str] = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("race")
        for p in producers:
            p.start()
        deadline = time.monotonic() + 60
        while len(received) < 2 * PER_PRODUCER and not errors and time.monotonic() < deadline:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                continue
            except Exception as exc:  # noqa: BLE001 - the failure this test is about
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            assert message.payload["pad"] == PAYLOAD_PAD
            received.add((message.payload["producer"], message.payload["i"]))
            message.ack()
    for p in producers:
        p.join(30)
    assert errors == []
    assert len(received) == 2 * PER_PRODUCER
    # Nothing half-written or unclaimed is left behind.
    assert list((tmp_path / "broker" / "queue").iterdir()) == []


def test_exchange_table_survives_concurrent_binds(tmp_path) -> None:
    """Binding many queues at once (workers starting together) keeps a valid, complete table."""
    app = make_celery(Settings(var_dir=tmp_path))
    ctx = multiprocessing.get_context("fork")

    exchange = Exchange("shared", "direct")

    def bind(names: list[str]) -> None:
        with app.connection_for_write() as conn:
            for name in names:
                Queue(name, exchange, routing_key=name)(conn.default_channel).declare()

    groups = [[f"q{g}-{i}" for i in range(30)] for g in range(3)]
    procs = [ctx.Process(target=bind, args=(g,)) for g in groups]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with app.connection_for_read() as conn:
        bound = {q.queue for q in conn.default_channel.get_table("shared")}
    assert bound == set(sum(groups, []))
