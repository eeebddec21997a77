"""Benchmark: a learner's history (50 rows + aggregates) and a course view, teacher vs ops key.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/seed_history.py --db apa_bench_history   # once
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_history.py --db apa_bench_history --calls 200

Goes through the real gateway: `create_app` with its own engine and pool on the seeded Postgres,
called in-process (routing, auth, key lookup, the queries, pydantic serialization; no network):
awaited on an event loop through httpx's ASGITransport by default, `--client testclient` for
Starlette's TestClient as in the earlier figures. A fifth case, an authenticated 404 (key check + one primary-key
lookup), is the floor every read route pays in the same run on the same machine. The cases are called round-robin (interleaved, so background load
on the shared machine hits them alike) after a warm-up; each figure is the wall time of one call.
The learner, course and teacher scope come from the `bench_meta` table the seeding script wrote.
Results: a table on stdout and `benchmarks/results/history_<label>.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from db.accounts import create_api_key  # noqa: E402
from db.engine import make_engine, make_session_factory, session_scope  # noqa: E402
from db.models import Role, Tenant  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@contextmanager
def _client(app, kind: str):
    """A `get(path, headers)` that calls the app in process.

    `asgi` (default): the ASGI app awaited on an event loop of this thread (httpx's ASGITransport,
    the app's lifespan entered): what the server does per request, sync routes' thread-pool hop
    included. `testclient`: Starlette's TestClient, which adds about eight cross-thread hops per
    request (its portal thread), several milliseconds on a busy 2-core machine: the earlier figures."""
    if kind == "testclient":
        from fastapi.testclient import TestClient

        with TestClient(app) as client:
            yield lambda path, headers: client.get(path, headers=headers)
        return
    import asyncio

    import httpx

    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    try:
        yield lambda path, headers: loop.run_until_complete(client.get(path, headers=headers))
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--db", default="apa_bench_history")
    ap.add_argument("--calls", type=int, default=200, help="timed calls per case")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls per case first")
    ap.add_argument("--limit", type=int, default=50, help="history page size")
    ap.add_argument("--label", default="run")
    ap.add_argument("--client", choices=("asgi", "testclient"), default="asgi", help="how the app is called")
    args = ap.parse_args()

    from api_gateway.app import create_app
    from fleet.settings import Settings

    url = make_url(args.server).set(database=args.db).render_as_string(hide_password=False)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with engine.connect() as c:
        meta = dict(c.execute(text("SELECT k, v FROM bench_meta")).all())
        revision = c.scalar(text("SELECT version_num FROM alembic_version"))
    with session_scope(sessions) as s:
        tenant = s.get(Tenant, uuid.UUID(meta["tenant_id"]))
        teacher = create_api_key(s, Role.teacher, name="bench teacher", tenant=tenant,
                                 courses=meta["teacher_courses"].split(","))[1]
        ops = create_api_key(s, Role.ops, name="bench ops")[1]

    learner, course = meta["learner_id"], meta["course_id"]
    cases = {
        # the floor of an authenticated read in the same run: key check + one primary-key lookup (404)
        "floor: unknown submission, ops": (f"/v1/submissions/{uuid.UUID(int=0)}", ops),
        "history teacher": (f"/v1/learners/{learner}/scores?limit={args.limit}", teacher),
        "history ops": (f"/v1/learners/{learner}/scores?limit={args.limit}", ops),
        "course teacher": (f"/v1/courses/{course}/learners", teacher),
        "course ops": (f"/v1/courses/{course}/learners", ops),
    }
    # The same queries called directly (no HTTP, no auth): the database work of each route.
    from db.queries import (
        HistoryFilter,
        course_learners,
        learner_aggregates,
        learner_history,
    )

    tenant_uuid = uuid.UUID(meta["tenant_id"])
    scope = tuple(meta["teacher_courses"].split(","))
    flt = {"teacher": HistoryFilter(learner_id=learner, tenant_id=tenant_uuid, courses=scope),
           "ops": HistoryFilter(learner_id=learner)}
    direct = {
        "queries only: history teacher": lambda s: (learner_history(s, flt["teacher"], limit=args.limit),
                                                    learner_aggregates(s, flt["teacher"])),
        "queries only: history ops": lambda s: (learner_history(s, flt["ops"], limit=args.limit),
                                                learner_aggregates(s, flt["ops"])),
        "queries only: course teacher": lambda s: course_learners(s, course, tenant_id=tenant_uuid),
        "queries only: course ops": lambda s: course_learners(s, course),
    }
    timings: dict[str, list[float]] = {k: [] for k in (*cases, *direct)}
    shape: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(var_dir=Path(tmp), database_url=url, broker_url="filesystem://")
        app = create_app(settings, sessions=sessions)
        with _client(app, args.client) as get:
            for rnd in range(args.warmup + args.calls):
                for name, (path, key) in cases.items():
                    t0 = time.perf_counter()
                    r = get(path, {"X-API-Key": key})
                    dt = (time.perf_counter() - t0) * 1000
                    if r.status_code != (404 if name.startswith("floor") else 200):
                        sys.exit(f"{name}: {r.status_code} {r.text[:300]}")
                    if rnd >= args.warmup:
                        timings[name].append(dt)
                    if rnd == 0:
                        body = r.json()
                        if name.startswith("floor"):
                            shape[name] = "404"
                        elif "items" in body:
                            agg = body["aggregates"]["total"]
                            shape[name] = f"{len(body['items'])} items, total n={agg['n']}"
                        else:
                            shape[name] = f"{len(body['learners'])} learners"
                for name, fn in direct.items():
                    with sessions() as s:
                        t0 = time.perf_counter()
                        fn(s)
                        dt = (time.perf_counter() - t0) * 1000
                    if rnd >= args.warmup:
                        timings[name].append(dt)
    engine.dispose()

    rows = []
    print(f"database {args.db} ({meta.get('submissions')} submissions, revision {revision}), "
          f"{args.calls} calls per case after {args.warmup} warm-up")
    print("| case | p50 ms | p95 ms | mean ms | response |\n|---|---:|---:|---:|---|")
    for name, ts in timings.items():
        row = {"case": name, "p50_ms": round(statistics.median(ts), 2), "p95_ms": round(pct(ts, 0.95), 2),
               "mean_ms": round(statistics.fmean(ts), 2), "calls": len(ts), "response": shape.get(name, "")}
        rows.append(row)
        print(f"| {name} | {row['p50_ms']} | {row['p95_ms']} | {row['mean_ms']} | {row['response']} |")
    out = ROOT / "benchmarks" / "results" / f"history_{args.label}.json"
    out.write_text(json.dumps({"db": args.db, "revision": revision, "meta": meta, "calls": args.calls,
                               "client": args.client,
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
