"""Server time of the teachers' course and learner pages on a 1 M-submission Postgres history.

Seeds (once; `--reuse` keeps the database) with set-based SQL through the project's own tables:
1,000,000 submissions of one tenant, 2 % failed, the rest with sentence scores. Course `big` has
2,000 learners x 25 recordings (50,000 submissions, each with 4 words and 12 phones); the other
950,000 are 40,000 learners in 400 courses. Then times the pages in process (TestClient: the
ASGI app with routing, auth, SQL and Jinja2, no network) signed in as a teacher of `big`:

    course page: the 40 pages x a few sort orders of `big`;  learner page: 40 learners of `big`.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_teacher_pages.py [--n 60] [--reuse]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB = "apa_bench_teacher_pages"
N_TOTAL = 1_000_000
BIG_LEARNERS, BIG_PER_LEARNER = 2000, 25

SEED_SQL = [
    """INSERT INTO tenants (id, name, webhook_secret, allowed_buckets, active, created_at)
       VALUES ('00000000-0000-0000-0000-00000000000a', 'acme', 'whsec_x', '[]', true, now())""",
    # course `big`: 2,000 learners x 25 recordings, one a day-ish
    f"""INSERT INTO submissions (id, tenant_id, lms_submission_id, learner_id, course_id, reference_text, audio_uri,
            granularity, status, attempts, created_at, updated_at)
        SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000000a', 'big-' || g, 'B' || (g % {BIG_LEARNERS}), 'big',
               'We call it bear', 's3://b/x.wav', 'full', CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'scored' END, 1,
               timestamptz '2026-01-01' + g * interval '10 minutes', timestamptz '2026-01-01' + g * interval '10 minutes'
        FROM generate_series(1, {BIG_LEARNERS * BIG_PER_LEARNER}) g""",
    # everything else: 40,000 learners in 400 courses
    f"""INSERT INTO submissions (id, tenant_id, lms_submission_id, learner_id, course_id, reference_text, audio_uri,
            granularity, status, attempts, created_at, updated_at)
        SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000000a', 'o-' || g, 'L' || (g % 40000),
               'c' || ((g % 40000) % 400), 'We call it bear', 's3://b/x.wav', 'full',
               CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'scored' END, 1,
               timestamptz '2026-01-01' + g * interval '30 seconds', timestamptz '2026-01-01' + g * interval '30 seconds'
        FROM generate_series(1, {N_TOTAL - BIG_LEARNERS * BIG_PER_LEARNER}) g""",
    """INSERT INTO sentence_scores (submission_id, accuracy, accuracy_expected, fluency, fluency_expected, prosody,
            prosody_expected, completeness, completeness_expected, total, total_expected)
        SELECT id, v, v, (v + 3) % 11, (v + 3) % 11, (v + 5) % 11, (v + 5) % 11, 10, 10, (v + 1) % 11, (v + 1) % 11
        FROM (SELECT id, abs(hashtext(id::text)) % 11 AS v FROM submissions WHERE status = 'scored') s""",
    """INSERT INTO word_scores (submission_id, position, text, accuracy, accuracy_expected, total, total_expected)
        SELECT s.id, p, (ARRAY['WE','CALL','IT','BEAR'])[p + 1], (abs(hashtext(s.id::text)) + p) % 11,
               (abs(hashtext(s.id::text)) + p) % 11, 5, 5
        FROM submissions s CROSS JOIN generate_series(0, 3) p WHERE s.course_id = 'big' AND s.status = 'scored'""",
    """INSERT INTO phone_scores (word_score_id, submission_id, position, phone, accuracy, accuracy_expected)
        SELECT w.id, w.submission_id, q, (ARRAY['AA','B','K'])[q + 1], ((w.id + q) % 3) * 5, ((w.id + q) % 3) * 5
        FROM word_scores w CROSS JOIN generate_series(0, 2) q""",
    # last, after the course summary's backfill, and outside a transaction: what autovacuum does to a
    # table after a bulk load (the visibility map lets the course index answer without the heap)
    "VACUUM ANALYZE",
]


def ensure_database(reuse: bool) -> str:
    from migrations.runner import upgrade

    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    url = make_url(ADMIN).set(database=DB).render_as_string(hide_password=False)
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DB})
        if exists and reuse:
            admin.dispose()
            return url
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DB}"'))
    admin.dispose()
    upgrade(url)
    engine = create_engine(url)
    start = time.perf_counter()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_history import summary_backfill_sql  # the course summary, as the worker would have kept it

    for stmt in [*SEED_SQL[:-1], *summary_backfill_sql(), SEED_SQL[-1]]:
        t = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(stmt))
        print(f"  seed step {time.perf_counter() - t:6.1f} s: {' '.join(stmt.split())[:70]}")
    with engine.connect() as conn:
        n = conn.scalar(text("SELECT count(*) FROM submissions"))
    print(f"seeded {n:,} submissions in {time.perf_counter() - start:.0f} s")
    engine.dispose()
    return url


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="requests per page kind")
    ap.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    ap.add_argument("--misses", type=int, default=10, help="course views right after a change")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from api_gateway.app import create_app
    from db.accounts import create_api_key, get_tenant
    from db.engine import make_engine, make_session_factory, session_scope
    from db.models import Role
    from fleet.settings import Settings

    url = ensure_database(args.reuse)
    settings = Settings(var_dir=Path(tempfile.mkdtemp()), database_url=url, broker_url="redis://127.0.0.1:6379/7")
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        key = create_api_key(s, Role.teacher, tenant=get_tenant(s, "acme"), courses=["big"])[1]
    app = create_app(settings, sessions=sessions)
    with TestClient(app) as client:
        page = client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = client.post("/ui/login", data={"api_key": key, "csrf_token": token, "next": "/ui/"},
                        headers={"Origin": "http://testserver"})
        assert r.status_code == 200, r.status_code
        sorts = ["learner", "latest_total", "mean_accuracy", "recordings"]
        course_urls = [f"/ui/courses/big?sort={sorts[i % 4]}&dir={'desc' if i % 2 else 'asc'}&page_no={1 + i % 40}"
                       for i in range(args.n)]
        learner_urls = [f"/ui/learners/B{(i * 37) % BIG_LEARNERS}?course_id=big" for i in range(args.n)]
        for kind, urls in (("course page (2,000 learners, 50 a page)", course_urls),
                           ("learner page (25 recordings, chart, practice list)", learner_urls)):
            for u in urls[:5]:  # warm-up
                assert client.get(u).status_code == 200
            times = []
            for u in urls:
                t = time.perf_counter()
                resp = client.get(u)
                times.append((time.perf_counter() - t) * 1000)
                assert resp.status_code == 200, (u, resp.status_code)
            print(f"{kind}: n={len(times)} p50 {statistics.median(times):.1f} ms, "
                  f"p95 {percentile(times, 0.95):.1f} ms, max {max(times):.1f} ms")
        # The first view after the course changed (a new recording, a status change): the course's
        # rows are aggregated again. Forced here by touching one submission before each view.
        times, cache = [], app.state.ui_course_cache
        misses_before = cache.misses
        for i in range(args.misses):
            with engine.begin() as c:
                c.execute(text("UPDATE submissions SET updated_at = (SELECT max(updated_at) FROM submissions "
                               "WHERE course_id = 'big') + interval '1 second' WHERE lms_submission_id = :k"),
                          {"k": f"big-{1 + i}"})  # past the latest: the seeded times run into the future
            t = time.perf_counter()
            resp = client.get(course_urls[i % len(course_urls)])
            times.append((time.perf_counter() - t) * 1000)
            assert resp.status_code == 200
        if times:
            print(f"course page, first view after a change: n={len(times)} p50 {statistics.median(times):.1f} ms, "
                  f"p95 {percentile(times, 0.95):.1f} ms, max {max(times):.1f} ms "
                  f"({cache.misses - misses_before} recomputations of the course's rows)")
    engine.dispose()


if __name__ == "__main__":
    main()
