"""Benchmark: the gateway under load and the queue's overhead per job, on real services.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_gateway.py --rate 40 --seconds 15 --serial 30

Starts a fresh Postgres database, moto's S3 server, the gateway (uvicorn) and a score worker (tiny
model) as separate processes, with Redis as broker; this process is the load generator on loopback.

1. Offered load: signed `POST /v1/submissions` at a fixed rate (open loop: each request is sent at
   its scheduled time whatever the previous ones do) -> accepted/s, p50/p99 latency.
2. Queue overhead: jobs submitted one at a time, each waited for -> end-to-end time (accepted to
   scored) minus the model time the worker recorded, p50/p99.
3. Peak RSS of the gateway process (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
from rich.console import Console
from rich.progress import track
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from db.accounts import create_api_key, create_tenant  # noqa: E402
from db.engine import make_engine, make_session_factory, session_scope  # noqa: E402
from db.models import Role, Submission, SubmissionStatus  # noqa: E402
from migrations.runner import upgrade  # noqa: E402
from tests.conftest import SAMPLE_DIR, free_port, wait_for_port  # noqa: E402
from tests.helpers_webhooks import signed_headers  # noqa: E402

console = Console()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=40.0, help="offered requests per second")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--serial", type=int, default=30, help="jobs for the queue-overhead phase")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis-db", type=int, default=15)
    args = ap.parse_args()

    items = [json.loads(line) for line in (SAMPLE_DIR / "manifest.jsonl").read_text().splitlines()]
    dbname = f"apa_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{dbname}"'))
    db_url = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
    upgrade(db_url)
    sessions = make_session_factory(make_engine(db_url))

    from moto.server import ThreadedMotoServer

    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    s3_url = f"http://127.0.0.1:{s3_port}"
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    s3.create_bucket(Bucket="bench")
    for it in items:
        s3.put_object(Bucket="bench", Key=it["audio"], Body=(SAMPLE_DIR / it["audio"]).read_bytes())
    with session_scope(sessions) as s:
        tenant = create_tenant(s, "bench", allowed_buckets=["bench"])
        _, key = create_api_key(s, Role.lms, tenant=tenant)
        secret = tenant.webhook_secret

    import redis

    redis.Redis(db=args.redis_db).flushdb()
    port = free_port()
    var = Path(f"/tmp/{dbname}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
    env.update(APA_DATABASE_URL=db_url, APA_BROKER_URL=f"redis://127.0.0.1:6379/{args.redis_db}",
               APA_STORAGE_BACKEND="s3", APA_S3_ENDPOINT_URL=s3_url, APA_S3_ACCESS_KEY_ID="t", APA_S3_SECRET_ACCESS_KEY="t",
               APA_BUCKET="bench", APA_VAR_DIR=str(var), HF_HUB_OFFLINE="1")
    logs = open(var.with_suffix(".log"), "w")
    gateway = subprocess.Popen([sys.executable, "-m", "cli.main", "gateway", "--port", str(port),
                                "--log-level", "warning"], env=env, stdout=logs, stderr=logs)
    base = f"http://127.0.0.1:{port}"
    worker = None
    try:
        wait_for_port(port, 60)

        def body_for(i: int) -> bytes:
            it = items[i % len(items)]
            return json.dumps({"submission_id": f"bench-{i}-{uuid.uuid4().hex[:6]}", "learner_id": f"l-{it['speaker']}",
                               "course_id": "bench", "reference_text": it["text"],
                               "reference_phones": [w["phones"] for w in it["words"]],
                               "audio_uri": f"s3://bench/{it['audio']}"}).encode()

        client = httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=64))

        def post(raw: bytes) -> httpx.Response:
            headers = signed_headers(secret, raw)
            headers["X-API-Key"] = key
            return client.post("/v1/submissions", content=raw, headers=headers)

        for i in range(20):  # warm-up (imports, CMUdict, connections)
            post(body_for(10_000 + i))

        # -- phase 1: fixed offered rate ----------------------------------------------------------
        n = int(args.rate * args.seconds)
        latencies: list[float] = []
        codes: list[int] = []
        lock = threading.Lock()

        def fire(i: int, due: float) -> None:
            raw = body_for(i)
            time.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            r = post(raw)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                codes.append(r.status_code)

        start = time.perf_counter() + 0.5
        console.print(f"phase 1: {n} signed webhooks at {args.rate:.0f}/s offered")
        with ThreadPoolExecutor(64) as pool:
            for i in range(n):
                pool.submit(fire, i, start + i / args.rate)
        elapsed = time.perf_counter() - start
        accepted = sum(c == 202 for c in codes)

        # -- phase 2: queue overhead, one job at a time ------------------------------------------
        with sessions() as s:  # the backlog from phase 1 is not part of this measurement
            s.execute(text("UPDATE submissions SET status='failed', error_code='bench_skipped' WHERE status='queued'"))
            s.commit()
        redis.Redis(db=args.redis_db).flushdb()
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--queues", "score"],
                                  env=env, stdout=logs, stderr=logs)
        post(body_for(20_000))
        time.sleep(15)  # model load in the worker child
        overheads: list[float] = []
        for j in track(range(args.serial), description="phase 2: serial jobs"):
            r = post(body_for(30_000 + j))
            sid = uuid.UUID(r.json()["id"])
            while True:
                with sessions() as s:
                    sub = s.get(Submission, sid)
                    if sub.status in (SubmissionStatus.scored, SubmissionStatus.failed):
                        break
                time.sleep(0.01)
            e2e_ms = (sub.finished_at - sub.created_at).total_seconds() * 1000
            overheads.append(e2e_ms - (sub.model_ms or 0.0))
        hwm_kb = int(next(line.split()[1] for line in Path(f"/proc/{gateway.pid}/status").read_text().splitlines()
                          if line.startswith("VmHWM")))
    finally:
        for p in (gateway, worker):
            if p is not None:
                p.terminate()
                p.wait(20)
        moto.stop()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))

    console.print(f"offered {args.rate:.0f}/s for {args.seconds:.0f}s: accepted {accepted}/{n} "
                  f"({accepted / elapsed:.1f}/s), other codes {sorted(set(codes) - {202})}")
    console.print(f"POST /v1/submissions latency: p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
                  f"p99 {pct(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    console.print(f"queue overhead per job (end-to-end minus model time), {len(overheads)} serial jobs: "
                  f"p50 {pct(overheads, 0.5):.0f} ms, p99 {pct(overheads, 0.99):.0f} ms "
                  f"(median {statistics.median(overheads):.0f} ms)")
    stages = round_stages(var.with_suffix(".log"))
    if stages:
        console.print(f"where a scoring round's time went ({len(stages)} rounds that scored, worker log), medians: "
                      + ", ".join(f"{k} {statistics.median(r[k] for r in stages):.1f} ms"
                                  for k in ("wait", "claim", "fetch", "model", "save") if k in stages[0]))
    console.print(f"gateway peak RSS (VmHWM): {hwm_kb / 1024:.0f} MiB")


def round_stages(log_path: Path) -> list[dict]:
    """The per-round stage times (claim, fetch, model, save) that the score task returns and Celery
    logs on its "succeeded" line (workers/tasks.py), for the rounds that scored something."""
    import ast
    import re

    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = re.search(r"succeeded in [0-9.]+s: (\{.*\})", line)
        if m:
            result = ast.literal_eval(m.group(1))
            if isinstance(result, dict) and result.get("scored") and "ms" in result:
                out.append(result["ms"])
    return out


if __name__ == "__main__":
    main()
