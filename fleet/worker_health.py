"""Is a worker pool process healthy? One rule, shared by the liveness probe (`apa-fleet
worker-health`, reading the heartbeat files the pool children write) and by the gateway's
`/readyz` and `/metrics` (reading the same heartbeats from the database). Pure: no torch, no
workers import, so the gateway can use it.

A child is healthy when its last beat is fresh and it is `ready`, or still `starting` (loading
its model) for less than the load timeout. A parent whose children are killed before they come
up, or die loading the model, stops producing fresh `ready` beats and so fails the check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STARTING, READY, FAILED = "starting", "ready", "failed"


@dataclass(frozen=True)
class Beat:
    """One pool process's last heartbeat."""

    id: str
    queues: str
    state: str
    started_at: datetime
    beat_at: datetime
    pid: int = 0
    detail: str | None = None


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def judge(beat: Beat, now: datetime, *, stale_after_s: float, load_timeout_s: float) -> tuple[bool, str]:
    """(healthy, reason) for one heartbeat at time `now`."""
    silent = (now - _aware(beat.beat_at)).total_seconds()
    if silent > stale_after_s:
        return False, f"no heartbeat for {silent:.0f} s (pool child dead or never came up)"
    if beat.state == READY:
        return True, "ready"
    if beat.state == STARTING:
        loading = (now - _aware(beat.started_at)).total_seconds()
        if loading <= load_timeout_s:
            return True, f"starting ({loading:.0f} s)"
        return False, f"still loading its model after {loading:.0f} s" + (f" ({beat.detail})" if beat.detail else "")
    return False, f"{beat.state}: {beat.detail or 'no detail'}"


def beat_file(folder: Path, queues: str, index: int) -> Path:
    return folder / f"{queues.replace(',', '+')}#{index}.json"


def write_beat_file(path: Path, beat: Beat) -> None:
    """Atomically replace the heartbeat file (a probe never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{beat.pid}.tmp")
    tmp.write_text(json.dumps({
        "id": beat.id, "queues": beat.queues, "state": beat.state, "pid": beat.pid, "detail": beat.detail,
        "started_at": beat.started_at.isoformat(), "beat_at": beat.beat_at.isoformat(),
    }))
    tmp.replace(path)


def read_beat_files(folder: Path, queues: str | None = None) -> list[Beat]:
    """Every heartbeat file in `folder` (optionally only those of workers on exactly `queues`)."""
    beats = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            raw = json.loads(path.read_text())
            beat = Beat(id=raw["id"], queues=raw["queues"], state=raw["state"], pid=raw.get("pid", 0),
                        detail=raw.get("detail"), started_at=datetime.fromisoformat(raw["started_at"]),
                        beat_at=datetime.fromisoformat(raw["beat_at"]))
        except (OSError, ValueError, KeyError):
            continue
        if queues is None or beat.queues == queues:
            beats.append(beat)
    return beats
