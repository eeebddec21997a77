"""Intake at the floor (issue 10): cached credentials that still honour revocation, a fast 503 past
capacity (never a 30 s stall, never a 500 from the pool), the optional intake HEAD, and several
gateway processes.

Real services: Postgres, Redis as the broker, moto's S3 server; `apa-fleet gateway` under uvicorn
for the worker processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db.accounts import create_api_key, create_tenant, hash_key, revoke_api_key
from db.engine import make_engine, make_session_factory, session_scope
from db.models import ApiKey, Role, Tenant
from migrations.runner import upgrade
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.conftest import ROOT, free_port, wait_for_port
from tests.helpers_webhooks import signed_headers
from tests.integration.gateway_support import Gateway, make_gateway

REDIS_DB = int(os.environ.get("APA_TEST_REDIS_URL", "redis://127.0.0.1:6379/12").rsplit("/", 1)[1])


@pytest.fixture
def make(pg_database: str, s3_server: str, s3_bucket: str, tmp_path: Path) -> Iterator:
    upgrade(pg_database)
    made: list[Gateway] = []

    def build(**overrides) -> Gateway:
        g = make_gateway(pg_database, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path,
                         redis_db=REDIS_DB, **overrides)
        g.client.__enter__()  # one event loop for the app, so threads' requests run concurrently on it
        made.append(g)
        return g

    yield build
    for g in made:
        g.client.__exit__(None, None, None)
        g.close()


# --- cached API keys and tenants ----------------------------------------------------------------


def test_a_revoked_key_is_refused_within_the_cache_ttl(make) -> None:
    g = make(auth_cache_ttl_s=0.5)
    assert g.post(g.payload()).status_code == 202
    assert g.get("/v1/learners/L/scores", "teacher_a_c1").status_code == 200
    with session_scope(g.sessions) as s:
        for name in ("lms_a", "teacher_a_c1"):
            key = s.query(ApiKey).filter(ApiKey.key_hash == hash_key(g.keys[name])).one()
            revoke_api_key(s, str(key.id))
    revoked_at = time.monotonic()
    deadline = revoked_at + 0.5 + 0.5  # the TTL, plus slack for this loaded machine
    while True:
        delivery = g.post(g.payload())
        read = g.get("/v1/learners/L/scores", "teacher_a_c1")
        if delivery.status_code == 401 and read.status_code == 401:
            break
        assert {delivery.status_code, read.status_code} <= {202, 200, 401}
        assert time.monotonic() < deadline, "a revoked key was still accepted after the cache TTL"
        time.sleep(0.05)
    assert delivery.json()["detail"]["code"] == "invalid_api_key"
    assert read.json()["detail"]["code"] == "invalid_api_key"


def test_a_deactivated_tenant_is_refused_within_the_cache_ttl(make) -> None:
    g = make(auth_cache_ttl_s=0.5)
    assert g.post(g.payload(), key=None, tenant="acme").status_code == 202  # the ?tenant= path
    assert g.post(g.payload()).status_code == 202  # the key path
    with session_scope(g.sessions) as s:
        s.get(Tenant, g.a.id).active = False
    time.sleep(0.5 + 0.05)
    by_name = g.post(g.payload(), key=None, tenant="acme")
    by_key = g.post(g.payload())
    assert by_name.status_code == 401 and by_name.json()["detail"]["code"] == "unknown_tenant"
    assert by_key.status_code == 401 and by_key.json()["detail"]["code"] == "invalid_api_key"


def test_cached_credentials_cost_no_query(make) -> None:
    from sqlalchemy import event

    g = make()  # the default TTL: a few seconds
    assert g.post(g.payload()).status_code == 202
    assert g.get("/v1/adapters", "ops").status_code == 200
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(g.engine, "before_cursor_execute", record)
    try:
        assert g.post(g.payload()).status_code == 202
        assert g.get("/v1/adapters", "ops").status_code == 200
    finally:
        event.remove(g.engine, "before_cursor_execute", record)
    assert not [st for st in seen if "api_keys" in st or "FROM tenants" in st], seen


# --- capacity: a fast 503, never a stall or a 500 -----------------------------------------------


def test_an_exhausted_pool_is_a_fast_503_not_a_30_s_stall(make) -> None:
    g = make(own_pool=True, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.5)
    assert g.post(g.payload()).status_code == 202  # key cached, the one connection pooled
    engine = g.client.app.state.services.owned_engine
    held = engine.connect()  # something else holds the only connection
    try:
        held.exec_driver_sql("SELECT 1")
        t0 = time.perf_counter()
        resp = g.post(g.payload())
        elapsed = time.perf_counter() - t0
    finally:
        held.close()
    assert resp.status_code == 503 and resp.json()["detail"]["code"] == "database_unavailable", resp.text
    assert int(resp.headers["Retry-After"]) > 0
    assert elapsed < 3, f"{elapsed:.1f} s"
    assert g.post(g.payload()).status_code == 202  # and it recovers at once


def test_past_max_inflight_a_request_is_refused_in_milliseconds(make) -> None:
    g = make(own_pool=True, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=3, gateway_max_inflight=2)
    assert g.post(g.payload()).status_code == 202
    engine = g.client.app.state.services.owned_engine
    held = engine.connect()
    held.exec_driver_sql("SELECT 1")
    slow: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: slow.append(g.post(g.payload()))) for _ in range(2)]
    try:
        for t in threads:  # two deliveries wait for the held connection: the process is full
            t.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        refused = g.post(g.payload())
        refused_s = time.perf_counter() - t0
        probe = g.client.get("/healthz")  # probes are never refused
    finally:
        held.close()
        for t in threads:
            t.join(30)
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"]["code"] == "overloaded" and refused.headers["Retry-After"] == "1"
    assert refused_s < 0.5, f"the refusal took {refused_s * 1000:.0f} ms"
    assert probe.status_code == 200
    assert sorted(r.status_code for r in slow) == [202, 202]  # the admitted ones completed
    assert g.post(g.payload()).status_code == 202


def test_a_burst_far_past_capacity_gets_only_202_or_fast_503(make) -> None:
    g = make(own_pool=True, db_pool_size=2, db_max_overflow=0, db_pool_timeout_s=1, gateway_max_inflight=4)
    assert g.post(g.payload()).status_code == 202
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(40)

    def deliver() -> None:
        start.wait()
        t0 = time.perf_counter()
        resp = g.post(g.payload())
        with lock:
            results.append((resp.status_code, time.perf_counter() - t0, resp.headers.get("Retry-After")))

    threads = [threading.Thread(target=deliver) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = {code for code, _, _ in results}
    assert len(results) == 40 and codes <= {202, 503}, sorted(code for code, _, _ in results)
    assert 202 in codes and 503 in codes
    assert all(retry for code, _, retry in results if code == 503)
    assert max(dt for _, dt, _ in results) < 10
    accepted = sum(code == 202 for code, _, _ in results)
    assert len(g.submissions()) == accepted + 1 and len(g.score_messages()) == accepted + 1


# --- the intake HEAD, by setting ----------------------------------------------------------------


def test_without_the_intake_head_a_missing_object_is_accepted_but_buckets_still_checked(make) -> None:
    g = make(intake_head_check=False)
    missing = g.post(g.payload(audio_uri=g.audio_uri("audio/not-there.wav")))
    assert missing.status_code == 202, missing.text  # the worker will report object_not_found
    foreign = g.post(g.payload(audio_uri="s3://someone-elses-bucket/a.wav"))
    assert foreign.status_code == 422 and foreign.json()["detail"]["code"] == "bucket_not_allowed"

    g.settings.intake_head_check = True  # the same app, with the HEAD: an immediate 422
    refused = g.post(g.payload(audio_uri=g.audio_uri("audio/not-there.wav")))
    assert refused.status_code == 422 and refused.json()["detail"]["code"] == "object_not_found"


# --- several gateway processes ------------------------------------------------------------------


def test_the_gateway_runs_several_small_processes_each_on_its_own_socket(pg_database: str, s3_server: str,
                                                             s3_bucket: str, tmp_path: Path) -> None:
    upgrade(pg_database)
    with session_scope(make_session_factory(make_engine(pg_database))) as s:
        tenant = create_tenant(s, "acme", allowed_buckets=[s3_bucket])
        secret, lms = tenant.webhook_secret, create_api_key(s, Role.lms, tenant=tenant)[1]
    settings = Settings(var_dir=tmp_path / "var", storage_backend="s3", s3_endpoint_url=s3_server, s3_access_key_id="test",
                        s3_secret_access_key="test")
    ObjectStore.from_settings(settings).put(f"s3://{s3_bucket}/audio/ok.wav", b"RIFF" + b"\0" * 496)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update(APA_VAR_DIR=str(tmp_path / "var"), APA_DATABASE_URL=pg_database, APA_GATEWAY_WORKERS="2",
               APA_BROKER_URL=f"redis://127.0.0.1:6379/{REDIS_DB}", APA_STORAGE_BACKEND="s3", APA_S3_ENDPOINT_URL=s3_server,
               APA_S3_ACCESS_KEY_ID="test", APA_S3_SECRET_ACCESS_KEY="test", APA_BUCKET=s3_bucket)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "gateway", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        try:
            wait_for_port(port, timeout=90)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"the gateway did not start: {proc.communicate()[0][-3000:]}") from None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(20):
                raw = json.dumps({"submission_id": f"s{i}", "learner_id": "L", "course_id": "c1",
                                  "reference_text": "We call it bear",
                                  "audio_uri": f"s3://{s3_bucket}/audio/ok.wav"}).encode()
                resp = client.post("/v1/submissions", content=raw,
                                   headers={**signed_headers(secret, raw), "X-API-Key": lms})
                assert resp.status_code == 202, resp.text
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        # Connections are spread over the processes (each listens on its own SO_REUSEPORT socket):
        # 32 kept-alive connections opened at once do not all land in one process.
        listening = [_sockets_on(pid, port, "0A") for pid in workers]  # 0A: LISTEN
        assert [len(x) for x in listening] == [1, 1] and listening[0] != listening[1], listening
        held = _hold_connections(port, 32)
        try:
            per_worker = [len(_sockets_on(pid, port, "01")) for pid in workers]  # 01: ESTABLISHED
        finally:
            for sock in held:
                sock.close()
        assert sum(per_worker) == 32 and min(per_worker) >= 4, per_worker
        for pid in workers:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            hwm_mib = int(next(line.split()[1] for line in status if line.startswith("VmHWM"))) / 1024
            assert hwm_mib <= 150, f"worker {pid}: {hwm_mib:.0f} MiB"
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert not [m for m in ("torch", "numpy", "soundfile", "soxr") if f"/{m}" in maps]
        # a process that dies is replaced by one with a socket of its own
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = [p for p in _children(proc.pid) if p != workers[0]]
            if len(now) == 2 and all(len(_sockets_on(p, port, "0A")) == 1 for p in now):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no replacement listens: {_children(proc.pid)}")
        replacement = next(p for p in now if p != workers[1])
        assert _sockets_on(replacement, port, "0A") != _sockets_on(workers[1], port, "0A")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    """The gateway's worker processes (uvicorn spawns them)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text():
                found.append(int(child))
        except FileNotFoundError:  # it just exited
            pass
    return found


def _hold_connections(port: int, n: int) -> list[socket.socket]:
    """n connections opened at once, each answered once (so it was accepted) and kept open."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in socks:
        assert sock.recv(65536).startswith(b"HTTP/1.1 ")
    return socks


def _sockets_on(pid: int, port: int, state: str) -> set[str]:
    """The inodes of this process's TCP sockets on local `port` in `state` (its fds against /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state and fields[9] in inodes:
            found.add(fields[9])
    return found


# --- a pooled, kept-alive S3 client ---------------------------------------------------------------


def test_the_s3_client_keeps_its_connections_for_every_thread(tmp_path: Path) -> None:
    """32 threads HEAD at once, then 16: the second round reuses the first round's connections
    (boto3's default pool kept 10 and closed the rest, so most intake HEADs opened a new one).
    moto under uvicorn here: moto's own server closes every connection, unlike a real S3."""
    import psutil

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--interface", "wsgi", "tests.moto_keepalive:app", "--port", str(port),
         "--log-level", "warning"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, 60)
        settings = Settings(var_dir=tmp_path / "var", storage_backend="s3", s3_endpoint_url=f"http://127.0.0.1:{port}",
                            s3_access_key_id="test", s3_secret_access_key="test")
        store = ObjectStore.from_settings(settings)
        store.s3.create_bucket(Bucket="pooled")
        uri = "s3://pooled/audio/pooled.wav"
        store.put(uri, b"RIFF" + b"\0" * 96)
        me = psutil.Process()

        def client_ports() -> set[int]:
            return {c.laddr.port for c in me.net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED}

        def round_of(n: int) -> None:
            barrier = threading.Barrier(n)

            def head() -> None:
                barrier.wait()
                for _ in range(3):
                    assert store.head(uri).size == 100

            threads = [threading.Thread(target=head) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)

        round_of(32)
        first = client_ports()
        assert len(first) >= 16, f"only {len(first)} connections kept after 32 concurrent HEADs"
        round_of(16)
        assert client_ports() <= first, "the second round opened new connections"
    finally:
        server.terminate()
        server.wait(20)


# --- pooled connections: pinged only after an idle spell ---------------------------------------


def test_a_connection_that_died_while_idle_is_replaced_at_checkout(pg_database: str) -> None:
    from sqlalchemy import create_engine, text

    engine = make_engine(pg_database, pool_size=1, max_overflow=0, ping_idle_after_s=0.3)
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as a:
            a.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.4)  # idle past the threshold: the checkout pings, finds it dead, opens another
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()
        admin.dispose()
