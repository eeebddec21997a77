"""The pool child's heartbeat: a file for the pod's liveness probe and a database row for the
gateway, refreshed every `worker_heartbeat_s` by a daemon thread.

It is started at the end of the child's initialisation, so a child that never finishes starting
(killed by the parent, crashed) never beats and its parent's heartbeats go stale. The state says
whether the model is loaded (`ready`), still loading (`starting`), or failed to load (`failed`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from fleet.settings import Settings
from fleet.worker_health import STARTING, Beat, beat_file, write_beat_file
from db.models import utcnow

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, settings: Settings, *, node: str, queues: str, index: int, sessions=None) -> None:
        self.settings = settings
        self.node, self.queues, self.index = node, queues, index
        self.sessions = sessions
        self.path: Path = beat_file(settings.effective_heartbeat_dir, queues, index)
        self.started_at = utcnow()
        self.state, self.detail = STARTING, None
        self._inherit_failed_start()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _inherit_failed_start(self) -> None:
        """A replacement child of the same worker whose previous child never became ready keeps
        the first child's start time: a child that dies loading, again and again, must not look
        like a fresh start each time (its worker fails the check after the load timeout)."""
        from fleet.worker_health import READY, read_beat_files

        for prev in read_beat_files(self.path.parent):
            if prev.id == self.id and prev.state != READY:
                self.started_at = prev.started_at
                self.detail = f"replacement child; the previous one ended {prev.state}: {prev.detail or '-'}"[:2000]

    @property
    def id(self) -> str:
        return f"{self.node}#{self.index}"

    def set_state(self, state: str, detail: str | None = None) -> None:
        """Change the state and beat at once (a failure must be on record before the child exits)."""
        self.state, self.detail = state, detail
        self.beat()

    def beat(self) -> None:
        beat = Beat(id=self.id, queues=self.queues, state=self.state, started_at=self.started_at,
                    beat_at=utcnow(), pid=os.getpid(), detail=self.detail)
        try:
            write_beat_file(self.path, beat)
        except OSError:
            log.warning("heartbeat: cannot write %s", self.path, exc_info=True)
        if self.sessions is None:
            return
        try:
            from db.heartbeats import record_beat

            with self.sessions() as s:
                record_beat(s, id=beat.id, queues=beat.queues, hostname=socket.gethostname(), pid=beat.pid,
                            state=beat.state, detail=beat.detail, started_at=beat.started_at, beat_at=beat.beat_at)
        except Exception:  # the database may be down: the file still beats for the liveness probe
            log.warning("heartbeat: cannot record in the database", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            self.beat()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="apa-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
