"""Benchmark: the gateway's webhook intake against the minimal app doing the same essential work.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_intake.py \
        --repeats 3 --seconds 8 --rate 300 [--workers 2] [--gateway-src DIR] [--h11]

Real services: a fresh Postgres database (migrated), Redis as broker, moto's S3 server (its own
process). Two servers run side by side, each as uvicorn subprocesses, against the same database,
broker and bucket:

* the gateway (`apa-fleet gateway`, from this tree or from `--gateway-src`, e.g. a `git archive`
  of an older commit, to measure before and after in one run);
* `benchmarks/minimal_intake_app.py`: HMAC check, one INSERT, one Celery publish, nothing else.

Each repeat runs, for each server in alternating order (interleaved, so drift on this shared
machine hits both alike):

1. closed loop: `--connections` keep-alive connections, each sending its next request as soon
   as the previous answer arrives -> accepted (202) per second;
2. open loop: requests scheduled at `--rate` per second whatever the answers do; latency is
   measured from each request's *scheduled* send time (no coordinated omission) -> p50/p99/max.

Then, for the gateway alone, an overload phase (`--overload-rate`, open loop) reports the answer
mix and how fast refusals come (503 + Retry-After expected, never a stall or a 500).

The load generator is a raw HTTP/1.1 client on asyncio (uvloop when present) sending pre-signed
requests, so that it costs far less CPU than the servers it measures. Medians over the repeats
and the gateway/minimal ratios are printed and written as JSON to `--out`.

`--h11` hides httptools and uvloop from the gateway process (a shim on its PYTHONPATH), to
reproduce a deployment with plain `uvicorn` (h11 parser, asyncio loop), as before issue 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from db.accounts import create_api_key, create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Role
from migrations.runner import upgrade
from tests.conftest import SAMPLE_DIR, free_port, wait_for_port
from tests.helpers_webhooks import signed_headers


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- requests -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    api_key: str | None
    items: list[dict]
    secret: str
    counter: int = 0

    def request(self) -> bytes:
        """One pre-signed `POST /v1/submissions`, as raw bytes, with fresh ids."""
        self.counter += 1
        it = self.items[self.counter % len(self.items)]
        body = json.dumps({
            "submission_id": f"{self.name}-{self.counter}-{uuid.uuid4().hex[:8]}",
            "learner_id": f"l-{it['speaker']}", "course_id": "bench", "reference_text": it["text"],
            "reference_phones": [w["phones"] for w in it["words"]], "audio_uri": f"s3://bench/{it['audio']}",
        }).encode()
        headers = signed_headers(self.secret, body)
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return (f"POST /v1/submissions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n{head}\r\n"
                ).encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, dict]:
    """Send one request on a kept-alive connection; the status and the headers of its answer."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    if headers.get("connection", "").lower() == "close":
        raise ConnectionResetError("server closed the connection")
    return status, headers


async def closed_loop(target: Target, connections: int, seconds: float, reqs: list[bytes]) -> dict:
    codes: dict[int, int] = {}
    it = iter(reqs)
    stop = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        try:
            while time.perf_counter() < stop:
                raw = next(it, None)
                if raw is None:
                    return
                try:
                    status, _ = await asyncio.wait_for(exchange(reader, writer, raw), 30)
                except TimeoutError:  # no answer in 30 s: code 0 (a stalled server)
                    status = 0
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
                except (ConnectionError, asyncio.IncompleteReadError):
                    status = 599
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
                codes[status] = codes.get(status, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    return {"accepted_per_s": codes.get(202, 0) / elapsed, "codes": codes, "seconds": elapsed}


async def open_loop(
    target: Target, rate: float, seconds: float, reqs: list[bytes], max_conns: int = 512, timeout: float = 10.0
) -> dict:
    """Requests at fixed scheduled times; latency from the scheduled time to the full answer."""
    n = min(len(reqs), int(rate * seconds))
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened = 0
    lat_by_code: dict[int, list[float]] = {}
    retry_after: list[str] = []
    start = time.perf_counter() + 0.2

    async def fire(i: int) -> None:
        nonlocal opened
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:  # a kept-alive connection if one is free, else a new one up to max_conns
            if idle:
                conn = idle.pop()
                break
            if opened < max_conns:
                opened += 1
                conn = await asyncio.open_connection("127.0.0.1", target.port)
                break
            await asyncio.sleep(0.001)
        try:
            try:
                status, headers = await asyncio.wait_for(exchange(*conn, reqs[i]), timeout)
            except (ConnectionError, asyncio.IncompleteReadError):
                # a kept-alive connection the server closed while idle (its keep-alive timeout):
                # one retry on a fresh connection, still timed from the scheduled send
                conn[1].close()
                conn = await asyncio.open_connection("127.0.0.1", target.port)
                status, headers = await asyncio.wait_for(exchange(*conn, reqs[i]), timeout)
            idle.append(conn)
        except TimeoutError:  # code 0, with the time waited as its (lower-bound) latency
            status, headers = 0, {}  # (before ConnectionError: TimeoutError is an OSError too)
            conn[1].close()
            opened -= 1
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            status, headers = 599, {}
            conn[1].close()
            opened -= 1
        lat_by_code.setdefault(status, []).append(time.perf_counter() - due)
        if status == 503:
            retry_after.append(headers.get("retry-after", ""))

    await asyncio.gather(*(fire(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    for _, w in idle:
        w.close()
    every = [x for v in lat_by_code.values() for x in v]
    out = {
        "offered_per_s": rate, "accepted_per_s": len(lat_by_code.get(202, [])) / elapsed,
        "codes": {c: len(v) for c, v in lat_by_code.items()},
        "p50_ms": pct(every, 0.5) * 1000, "p99_ms": pct(every, 0.99) * 1000, "max_ms": max(every) * 1000,
    }
    if 503 in lat_by_code:
        out["p99_503_ms"] = pct(lat_by_code[503], 0.99) * 1000
        out["retry_after_missing"] = sum(1 for v in retry_after if not v)
    return out


# ---- services -----------------------------------------------------------------------------------


@dataclass
class World:
    db_url: str
    dsn: str
    s3_url: str
    tenant_id: str
    secret: str
    key: str
    items: list[dict]
    procs: list[subprocess.Popen] = field(default_factory=list)


def uvloop_shim() -> Path:
    """A folder whose `uvloop` and `httptools` fail to import, so uvicorn picks asyncio and h11."""
    shim = Path(tempfile.mkdtemp(prefix="apa_h11_"))
    for name in ("uvloop", "httptools"):
        (shim / name).mkdir()
        (shim / name / "__init__.py").write_text("raise ImportError('hidden by bench_intake --h11')\n")
    return shim


def start(cmd: list[str], env: dict, port: int, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 90)
    except Exception:
        proc.terminate()
        raise RuntimeError(f"{cmd} did not start; see {log}") from None
    return proc


def rss_mib(pid: int) -> float:
    """Peak RSS (VmHWM) of a process and of its children (the uvicorn workers), the largest one."""
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    peak = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--connections", type=int, default=32, help="closed loop")
    ap.add_argument("--rate", type=float, default=300.0, help="open loop, offered requests per second")
    ap.add_argument("--open-repeats", type=int, default=0, help="open-loop repeats (0: --repeats)")
    ap.add_argument("--overload-rate", type=float, default=600.0, help="gateway alone; 0 skips it")
    ap.add_argument("--workers", type=int, default=0, help="APA_GATEWAY_WORKERS for the gateway (0: its default)")
    ap.add_argument("--gateway-src", type=Path, default=ROOT, help="source tree the gateway runs from")
    ap.add_argument("--h11", action="store_true", help="hide httptools/uvloop from the gateway")
    ap.add_argument("--s3-keepalive", action="store_true",
                    help="serve moto with uvicorn, which keeps connections alive like a real S3 (moto's own "
                         "server closes each one)")
    ap.add_argument("--gateway-env", action="append", default=[], help="extra NAME=VALUE for the gateway")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis-db", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on a plain kill

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    items = [json.loads(line) for line in (SAMPLE_DIR / "manifest.jsonl").read_text().splitlines()]
    dbname = f"apa_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{dbname}"'))
    db_url = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
    tmp = Path(tempfile.mkdtemp(prefix="apa_bench_intake_"))
    print(f"database {dbname}, logs under {tmp}", flush=True)
    procs: list[subprocess.Popen] = []
    try:
        upgrade(db_url)
        engine = make_engine(db_url)
        with session_scope(make_session_factory(engine)) as s:
            tenant = create_tenant(s, "bench", allowed_buckets=["bench"])
            _, key = create_api_key(s, Role.lms, tenant=tenant)
            secret, tenant_id = tenant.webhook_secret, str(tenant.id)
        engine.dispose()

        s3_port = free_port()
        moto_cmd = ([sys.executable, "-m", "uvicorn", "--interface", "wsgi", "tests.moto_keepalive:app",
                     "--port", str(s3_port), "--log-level", "warning"] if args.s3_keepalive
                    else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)])
        procs.append(start(moto_cmd, dict(os.environ, PYTHONPATH=str(ROOT)), s3_port, tmp / "moto.log"))
        s3_url = f"http://127.0.0.1:{s3_port}"
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")
        s3.create_bucket(Bucket="bench")
        for it in items:
            s3.put_object(Bucket="bench", Key=it["audio"], Body=(SAMPLE_DIR / it["audio"]).read_bytes())

        import redis

        broker = f"redis://127.0.0.1:6379/{args.redis_db}"
        redis.Redis.from_url(broker).flushdb()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("APA_")}
        base_env["HF_HUB_OFFLINE"] = "1"

        gw_port = free_port()
        gw_env = dict(base_env, APA_DATABASE_URL=db_url, APA_BROKER_URL=broker, APA_STORAGE_BACKEND="s3",
                      APA_S3_ENDPOINT_URL=s3_url,
                      APA_S3_ACCESS_KEY_ID="t", APA_S3_SECRET_ACCESS_KEY="t", APA_BUCKET="bench",
                      APA_VAR_DIR=str(tmp / "var"))
        if args.workers:
            gw_env["APA_GATEWAY_WORKERS"] = str(args.workers)
        for pair in args.gateway_env:
            name, _, value = pair.partition("=")
            gw_env[name] = value
        src = args.gateway_src.resolve()
        gw_env["PYTHONPATH"] = (f"{uvloop_shim()}:" if args.h11 else "") + str(src)
        gateway = start([sys.executable, "-m", "cli.main", "gateway", "--port", str(gw_port),
                         "--log-level", "warning"], gw_env, gw_port, tmp / "gateway.log", cwd=src)
        procs.append(gateway)

        min_port = free_port()
        dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
        min_env = dict(base_env, APA_MIN_DSN=dsn, APA_MIN_SECRET=secret, APA_MIN_BROKER=broker,
                       APA_MIN_TENANT=tenant_id, PYTHONPATH=str(ROOT))
        procs.append(start([sys.executable, "-m", "uvicorn", "benchmarks.minimal_intake_app:app", "--port",
                            str(min_port), "--log-level", "warning"], min_env, min_port, tmp / "minimal.log"))

        targets = {"gateway": Target("gw", gw_port, key, items, secret),
                   "minimal": Target("min", min_port, None, items, secret)}
        results: dict[str, dict[str, list[dict]]] = {n: {"closed": [], "open": []} for n in targets}

        async def run_all() -> dict:
            for t in targets.values():  # warm-up: imports, lexicon, pooled connections
                await closed_loop(t, 4, 1.0, [t.request() for _ in range(200)])
            # All closed-loop repeats first, then the open-loop ones: a server that collapses under
            # the offered rate (the gateway before issue 10 never recovered for minutes) then
            # spoils only its own later open-loop figures.
            for phase, reps in (("closed", args.repeats), ("open", args.open_repeats or args.repeats)):
                for rep in range(reps):
                    order = list(targets) if rep % 2 == 0 else list(reversed(targets))
                    for name in order:
                        t = targets[name]
                        if phase == "closed":
                            reqs = [t.request() for _ in range(int(3000 * args.seconds))]
                            r = await closed_loop(t, args.connections, args.seconds, reqs)
                            print(f"[{rep}] {name:8s} closed loop x{args.connections}: {r['accepted_per_s']:.0f}/s "
                                  f"codes {r['codes']}", flush=True)
                        else:
                            reqs = [t.request() for _ in range(int(args.rate * args.seconds) + 1)]
                            r = await open_loop(t, args.rate, args.seconds, reqs)
                            print(f"[{rep}] {name:8s} open loop {args.rate:.0f}/s: accepted {r['accepted_per_s']:.0f}/s "
                                  f"p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} max {r['max_ms']:.0f} ms "
                                  f"codes {r['codes']}", flush=True)
                        results[name][phase].append(r)
                        redis.Redis.from_url(broker).delete("score")
                        await asyncio.sleep(1.0)
            overload = None
            if args.overload_rate:
                t = targets["gateway"]
                reqs = [t.request() for _ in range(int(args.overload_rate * args.seconds) + 1)]
                overload = await open_loop(t, args.overload_rate, args.seconds, reqs)
                print(f"gateway overload {args.overload_rate:.0f}/s: {overload}", flush=True)
            return overload

        overload = asyncio.run(run_all())
        peak_rss = rss_mib(gateway.pid)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))

    def med(name: str, phase: str, k: str) -> float:
        return statistics.median(r[k] for r in results[name][phase])

    summary = {
        "config": {"repeats": args.repeats, "seconds": args.seconds, "connections": args.connections,
                   "rate": args.rate, "workers": args.workers, "h11": args.h11, "gateway_src": str(args.gateway_src),
                   "gateway_env": args.gateway_env, "s3_keepalive": args.s3_keepalive, "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "runs": results, "overload": overload, "gateway_peak_rss_mib": peak_rss,
    }
    for name in targets:
        summary[name] = {
            "closed_accepted_per_s": med(name, "closed", "accepted_per_s"),
            "open_p50_ms": med(name, "open", "p50_ms"), "open_p99_ms": med(name, "open", "p99_ms"),
            "open_accepted_per_s": med(name, "open", "accepted_per_s"),
        }
    g, m = summary["gateway"], summary["minimal"]
    summary["ratio_closed"] = g["closed_accepted_per_s"] / m["closed_accepted_per_s"]
    summary["ratio_open_p99"] = g["open_p99_ms"] / m["open_p99_ms"]
    print(f"\nmedians over {args.repeats} interleaved repeats ({args.seconds:.0f} s phases):")
    print(f"{'':10s}{'closed x' + str(args.connections) + ' /s':>18s}{'open p50 ms':>14s}{'open p99 ms':>14s}"
          f"{'accepted /s':>14s}")
    for name in targets:
        r = summary[name]
        print(f"{name:10s}{r['closed_accepted_per_s']:18.0f}{r['open_p50_ms']:14.1f}{r['open_p99_ms']:14.1f}"
              f"{r['open_accepted_per_s']:14.0f}")
    print(f"gateway / minimal: closed-loop throughput {summary['ratio_closed']:.2f}x, "
          f"open-loop p99 {summary['ratio_open_p99']:.2f}x; gateway peak RSS {peak_rss:.0f} MiB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
