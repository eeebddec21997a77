"""Seed a Postgres database with a scored history at scale (default 1 M submissions).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/seed_history.py --db apa_bench_history --submissions 1000000

Creates the database (dropping it first with `--recreate`), applies the migrations (optionally up to
`--revision`, so the same data can be measured before and after a later migration), then fills
submissions, sentence, word and phone rows with `INSERT ... SELECT FROM generate_series` on the
server: no row crosses the wire, so 1 M submissions / ~10 M words / ~30 M phones take minutes.

Why the shape (issue 10): the history and course-view queries must stay fast where one learner has
~100 submissions among a million and one course has ~5,000. So:
  tenants T (default 10), each with C courses (20) and L/T learners (1,000 of 10,000 learners);
  submission i belongs to learner i % L, whose tenant is learner % T; a learner takes 4 of its
  tenant's courses, one per quarter of its submissions; created_at grows with i (one year in all);
  95 % scored (sentence + 10 words x 3 phones, integer scores 0..10 from a hash of i), 4 % failed,
  1 % queued; raw_output and reference_text are realistic in size (they are what a history query
  must NOT read). Values are a deterministic function of i, so two seeds give the same data.

Secondary indexes and foreign keys are dropped during the load and re-created after it (the same
definitions, read back from the catalog), then the tables are VACUUM ANALYZEd.
The chosen learner, course and tenant for the benchmark are printed and stored in `bench_meta`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from migrations.runner import upgrade  # noqa: E402

TABLES = ("submissions", "sentence_scores", "word_scores", "phone_scores")
T0 = "2025-11-01 00:00:00+00"
RAW = ("accuracy: 8/10 fluency: 7/10 prosody: 7/10 completeness: 10/10 total: 8/10 | "
       "MARK/8/10/8 [M 2 AA 2 R 1 K 2] IS/9/10/9 [IH 2 Z 2] GOING/7/10/7 [G 2 OW 1 IH 2 NG 2] "
       "TO/9/10/9 [T 2 UW 2] SEE/8/10/8 [S 2 IY 2] ELEPHANT/6/10/6 [EH 1 L 2 AH 1 F 2 AH 2 N 1 T 2] ") * 2


def tenant_uuid(t: int) -> str:
    return f"00000000-0000-4000-8000-{t:012d}"


def log(msg: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:7.1f} s] {msg}", flush=True)


SUMMARY = "course_learner_summaries"


def revision_has_summary(c) -> bool:
    return c.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": SUMMARY}).scalar()


def _migration(name: str):
    import importlib.util

    path = ROOT / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary_backfill_sql() -> list[str]:
    """The migrations' own backfills (0009: the summary; 0011: its last-three slots): the course
    view reads the summary, which the worker keeps and a migration over existing rows fills; rows
    loaded here by SQL need the same filling."""
    return [_migration("0009_history_at_scale")._backfill_sql(),
            *_migration("0011_course_page_from_summary").backfill_sql()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--db", default="apa_bench_history")
    ap.add_argument("--recreate", action="store_true", help="drop the database first if it exists")
    ap.add_argument("--revision", default="head", help="migrate to this revision before seeding")
    ap.add_argument("--submissions", type=int, default=1_000_000)
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--courses-per-tenant", type=int, default=20)
    ap.add_argument("--learners", type=int, default=10_000)
    ap.add_argument("--words", type=int, default=10, help="words per scored submission")
    ap.add_argument("--phones", type=int, default=3, help="phones per word")
    args = ap.parse_args()
    t0 = time.monotonic()

    admin = create_engine(args.server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": args.db})
        if exists and not args.recreate:
            sys.exit(f"database {args.db} exists; pass --recreate to replace it")
        if exists:
            conn.execute(text(f'DROP DATABASE "{args.db}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{args.db}"'))
    admin.dispose()
    url = make_url(args.server).set(database=args.db).render_as_string(hide_password=False)
    upgrade(url, args.revision)
    log(f"migrated {args.db} to {args.revision}", t0)

    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    n, T, C, L, W, P = (args.submissions, args.tenants, args.courses_per_tenant, args.learners,
                        args.words, args.phones)
    with eng.connect() as c:
        c.execute(text("SET maintenance_work_mem = '256MB'"))
        c.execute(text("SET work_mem = '64MB'"))
        # Remember, then drop, secondary indexes and foreign keys of the four big tables.
        defs = c.execute(text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid::regclass::text = ANY(:t) AND contype IN ('f', 'u') ORDER BY contype DESC"
        ), {"t": list(TABLES)}).all()
        idx = c.execute(text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid::regclass::text = ANY(:t) AND NOT i.indisprimary AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        ), {"t": list(TABLES)}).all()
        for table, name, _ in defs:
            c.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for name, _ in idx:
            c.execute(text(f"DROP INDEX {name}"))
        log(f"dropped {len(defs)} constraints and {len(idx)} indexes for the load", t0)

        c.execute(text(
            "INSERT INTO tenants (id, name, webhook_secret, callback_url, allowed_buckets, active, created_at) "
            "SELECT ('00000000-0000-4000-8000-' || lpad(t::text, 12, '0'))::uuid, 'bench-' || t, "
            "'whsec_' || encode(sha256(t::text::bytea), 'base64'), NULL, '[\"bench\"]', true, now() "
            "FROM generate_series(0, :T - 1) t"
        ), {"T": T})
        # learner l: tenant l % T; k-th quarter of its submissions in course (l / T + 5k) % C.
        c.execute(text(f"""
            INSERT INTO submissions (id, tenant_id, lms_submission_id, webhook_id, learner_id, course_id,
                assignment_id, reference_text, reference_phones, audio_uri, granularity, callback_url,
                status, attempts, error_code, error_message, created_at, updated_at, started_at,
                finished_at, model_ms, adapter_version, model_name, raw_output)
            SELECT md5('sub' || i)::uuid,
                   ('00000000-0000-4000-8000-' || lpad(((i % :L) % :T)::text, 12, '0'))::uuid,
                   'lms-' || i, 'msg_' || i, 'learner-' || (i % :L),
                   'course-' || ((i % :L) % :T) || '-' || (((i % :L) / :T + 5 * ((i / :L) * 4 / greatest(:n / :L, 1))) % :C),
                   'assignment-' || (i / :L) % 10,
                   'MARK IS GOING TO SEE ELEPHANT AT THE ZOO TODAY', NULL,
                   's3://bench/rec/' || i || '.flac', 'full', NULL,
                   CASE WHEN i % 100 < 95 THEN 'scored' WHEN i % 100 < 99 THEN 'failed' ELSE 'queued' END,
                   CASE WHEN i % 100 < 99 THEN 1 ELSE 0 END,
                   CASE WHEN i % 100 BETWEEN 95 AND 98 THEN 'audio_silent' END,
                   CASE WHEN i % 100 BETWEEN 95 AND 98 THEN 'the recording is silent' END,
                   ts, ts + interval '2 s', ts + interval '1 s', CASE WHEN i % 100 < 99 THEN ts + interval '2 s' END,
                   CASE WHEN i % 100 < 95 THEN 350.0 END,
                   CASE WHEN i % 100 < 95 THEN 'v0001' END,
                   CASE WHEN i % 100 < 95 THEN 'tiny' END,
                   CASE WHEN i % 100 < 95 THEN :raw END
            FROM (SELECT i, timestamptz '{T0}' + i * (interval '365 days' / :n) AS ts
                  FROM generate_series(0, :n - 1) i) g
        """), {"n": n, "L": L, "T": T, "C": C, "raw": RAW})
        log(f"{n:,} submissions", t0)
        # Scores: deterministic in i, 0..10 (hashint8 spreads them; aspect k uses i * 8 + k).
        c.execute(text("""
            INSERT INTO sentence_scores (submission_id, accuracy, accuracy_expected, fluency, fluency_expected,
                prosody, prosody_expected, completeness, completeness_expected, total, total_expected)
            SELECT md5('sub' || i)::uuid, a, a + 0.25, f, f - 0.25, p, p + 0.1, cm, cm - 0.1, tt, tt + 0.05
            FROM (SELECT i, (abs(hashint8(i * 8)) % 11) AS a, (abs(hashint8(i * 8 + 1)) % 11) AS f,
                         (abs(hashint8(i * 8 + 2)) % 11) AS p, (abs(hashint8(i * 8 + 3)) % 11) AS cm,
                         (abs(hashint8(i * 8 + 4)) % 11) AS tt
                  FROM generate_series(0, :n - 1) i WHERE i % 100 < 95) g
        """), {"n": n})
        log("sentence scores", t0)
        c.execute(text("""
            INSERT INTO word_scores (id, submission_id, position, text, accuracy, accuracy_expected,
                stress, stress_expected, total, total_expected)
            SELECT i * :W + w + 1, md5('sub' || i)::uuid, w, 'WORD' || w, v, v + 0.2, 10, 9.5, v, v - 0.2
            FROM (SELECT i, w, (abs(hashint8(i * 64 + w)) % 11) AS v
                  FROM generate_series(0, :n - 1) i, generate_series(0, :W - 1) w WHERE i % 100 < 95) g
        """), {"n": n, "W": W})
        log("word scores", t0)
        c.execute(text("""
            INSERT INTO phone_scores (id, word_score_id, submission_id, position, phone, accuracy, accuracy_expected)
            SELECT (i * :W + w) * :P + p + 1, i * :W + w + 1, md5('sub' || i)::uuid, p, 'AH', v % 3, (v % 3) + 0.1
            FROM (SELECT i, w, p, abs(hashint8(i * 512 + w * 8 + p)) AS v
                  FROM generate_series(0, :n - 1) i, generate_series(0, :W - 1) w,
                       generate_series(0, :P - 1) p WHERE i % 100 < 95) g
        """), {"n": n, "W": W, "P": P})
        log("phone scores", t0)
        for seq, table in (("word_scores_id_seq", "word_scores"), ("phone_scores_id_seq", "phone_scores")):
            c.execute(text(f"SELECT setval('{seq}', (SELECT coalesce(max(id), 1) FROM {table}))"))

        for name, ddl in idx:
            c.execute(text(ddl))
        for table, name, ddl in reversed(defs):  # unique constraints first, then foreign keys
            c.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {ddl}'))
        log(f"re-created {len(idx)} indexes and {len(defs)} constraints", t0)
        if revision_has_summary(c):
            c.execute(text(f"TRUNCATE {SUMMARY}"))
            for stmt in summary_backfill_sql():
                c.execute(text(stmt))
            log("course summaries (migrations 0009 and 0011's backfills)", t0)
        for table in (*TABLES, "tenants", *([SUMMARY] if revision_has_summary(c) else [])):
            c.execute(text(f"VACUUM ANALYZE {table}"))
        log("vacuum analyze", t0)
        # What the benchmark queries: tenant 0's learner 0 and its first course.
        c.execute(text("CREATE TABLE IF NOT EXISTS bench_meta (k text PRIMARY KEY, v text)"))
        meta = {
            "tenant_id": tenant_uuid(0),
            "learner_id": "learner-0",
            "course_id": "course-0-0",
            "teacher_courses": ",".join(f"course-0-{k}" for k in range(min(8, C))),
            "submissions": str(n),
        }
        for k, v in meta.items():
            c.execute(text("INSERT INTO bench_meta VALUES (:k, :v) ON CONFLICT (k) DO UPDATE SET v = excluded.v"),
                      {"k": k, "v": v})
        counts = {t: c.scalar(text(f"SELECT count(*) FROM {t}")) for t in TABLES}
        size = c.scalar(text("SELECT pg_size_pretty(pg_database_size(current_database()))"))
    eng.dispose()
    log(f"done: {counts}, database size {size}", t0)
    print(f"database URL: {url}")


if __name__ == "__main__":
    main()
