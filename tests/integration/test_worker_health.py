"""Worker liveness from heartbeats: the shared rule, the `apa-fleet worker-health` probe over the
heartbeat files, and the gateway's /readyz and /metrics over the database rows."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from db.engine import session_scope
from db.heartbeats import record_beat
from migrations.runner import upgrade
from fleet.worker_health import FAILED, READY, STARTING, Beat, beat_file, judge, write_beat_file
from tests.conftest import run_cli
from tests.integration.gateway_support import make_gateway

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
REDIS_DB = 11


def _beat(state: str, *, silent_s: float = 1, started_s: float = 20, detail: str | None = None,
          queues: str = "score", id: str = "score@h.1#0", now: datetime = NOW) -> Beat:
    return Beat(id=id, queues=queues, state=state, pid=42, detail=detail,
                started_at=now - timedelta(seconds=started_s), beat_at=now - timedelta(seconds=silent_s))


def test_the_rule() -> None:
    rule = dict(stale_after_s=30, load_timeout_s=600)
    assert judge(_beat(READY), NOW, **rule) == (True, "ready")
    assert judge(_beat(STARTING, started_s=100), NOW, **rule)[0]  # loading, within the window
    ok, reason = judge(_beat(STARTING, started_s=601, detail="replacement child"), NOW, **rule)
    assert not ok and "still loading" in reason and "replacement child" in reason
    ok, reason = judge(_beat(READY, silent_s=31), NOW, **rule)  # children killed, none came back
    assert not ok and "no heartbeat for 31 s" in reason
    ok, reason = judge(_beat(FAILED, detail="model load failed: OSError"), NOW, **rule)
    assert not ok and "model load failed" in reason
    naive = Beat(id="x", queues="score", state=READY, started_at=NOW.replace(tzinfo=None),
                 beat_at=NOW.replace(tzinfo=None))  # as SQLite returns them
    assert judge(naive, NOW, **rule)[0]


def test_probe_reads_the_heartbeat_files(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "var" / "heartbeats"
    now = datetime.now(timezone.utc)
    probe = run_cli(["worker-health", "--queues", "score"], cli_env, check=False)
    assert probe.returncode == 1 and "no worker heartbeat" in probe.stdout
    write_beat_file(beat_file(folder, "score", 0), _beat(READY, now=now))
    write_beat_file(beat_file(folder, "deliver", 0), _beat(READY, silent_s=120, queues="deliver",
                                                             id="deliver@h.2#0", now=now))
    assert run_cli(["worker-health", "--queues", "score"], cli_env, check=False).returncode == 0
    stale = run_cli(["worker-health", "--queues", "deliver"], cli_env, check=False)
    assert stale.returncode == 1 and re.search(r"deliver@h.2#0 \[deliver\] pid 42: unhealthy: no heartbeat for 1[2-9][0-9] s", stale.stdout)
    write_beat_file(beat_file(folder, "score", 0), _beat(FAILED, detail="model load failed: boom", now=now))
    failed = run_cli(["worker-health", "--queues", "score"], cli_env, check=False)
    assert failed.returncode == 1 and "model load failed: boom" in failed.stdout


def test_gateway_shows_workers_in_readyz_and_metrics(sqlite_database: str, s3_server: str, s3_bucket: str,
                                                     tmp_path: Path) -> None:
    upgrade(sqlite_database)
    gw = make_gateway(sqlite_database, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    try:
        now = datetime.now(timezone.utc)
        with session_scope(gw.sessions) as s:
            for id, queues, state, silent in (("score@a.1#0", "score", READY, 2),
                                              ("score@b.2#0", "score", FAILED, 2),
                                              ("deliver@c.3#0", "deliver", READY, 45),
                                              ("score@gone.4#0", "score", READY, 3600)):
                record_beat(s, id=id, queues=queues, hostname="h", pid=1, state=state,
                            detail="model load failed: boom" if state == FAILED else None,
                            started_at=now - timedelta(seconds=60), beat_at=now - timedelta(seconds=silent))
        ready = gw.client.get("/readyz")
        body = ready.json()
        assert ready.status_code == 200 and body["status"] == "degraded"
        assert body["workers"]["score@a.1#0"] == "score: ok: ready"
        assert body["workers"]["score@b.2#0"].startswith("score: unhealthy: failed: model load failed")
        assert body["workers"]["deliver@c.3#0"].startswith("deliver: unhealthy: no heartbeat for 45 s")
        assert "score@gone.4#0" not in body["workers"]  # a replaced pod is gone, not unhealthy
        lines = set(gw.client.get("/metrics").text.splitlines())
        for series in ('apa_workers{health="healthy",queues="score"} 1.0',
                       'apa_workers{health="unhealthy",queues="score"} 1.0',
                       'apa_workers{health="unhealthy",queues="deliver"} 1.0',
                       'apa_metrics_collect_errors{source="workers"} 0.0'):
            assert series in lines, series
    finally:
        gw.close()
