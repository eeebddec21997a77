"""Issue 8, defects 10-12, on a real Postgres, moto's S3 and Redis:

- batch registration only writes a row and publishes a validation task on the `train` queue (202);
  concurrent registrations of one URI give one batch and no 500; validation commits per chunk,
  shows its progress and resumes where a killed run stopped; discovery is off the deliver queue;
- the database allows one queued/running training job per engine, whoever triggers it;
- an ops activation racing the job's promotion leaves the job's adapter a candidate, not a failure.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from db.engine import session_scope
from db.models import Adapter, AdapterStatus, AnnotationBatch, BatchStatus, JobStatus, TrainingJob
from tests.conftest import SAMPLE_DIR
from tests.integration.gateway_support import make_gateway
from tests.training_support import pg_sessions, pg_url, pick_clips, so_entry, training_defaults, write_batch  # noqa: F401

REDIS_DB = 14
BASE = "tiny-qwen2-audio"


@pytest.fixture
def gw(pg_url, s3_server: str, s3_bucket: str, tmp_path: Path):  # noqa: F811
    g = make_gateway(pg_url, s3_server=s3_server, bucket=s3_bucket, tmp_path=tmp_path, redis_db=REDIS_DB)
    yield g
    g.close()


def _ops_post(g, path: str, body: dict):
    return g.client.post(path, headers={g.settings.api_key_header: g.keys["ops"]}, json=body)


def _messages(g, queue: str) -> list[tuple[str, list]]:
    out = []
    for raw in g.redis.lrange(queue, 0, -1):
        msg = json.loads(raw)
        out.append((msg["headers"]["task"], json.loads(msg["headers"]["argsrepr"].replace("'", '"'))))
    return out


def _batch(store, prefix: str, rows: list[dict], *, bad: int = 0) -> str:
    scores = {r["utt_id"]: so_entry(r) for r in rows}
    for r in rows[:bad]:
        scores[r["utt_id"]]["fluency"] = 42
    audio = {f"{r['utt_id']}.flac": (SAMPLE_DIR / r["audio"]).read_bytes() for r in rows}
    return write_batch(store, prefix, scores, audio)


# -- 10: registration is a row and a task ------------------------------------------------------


def test_concurrent_registrations_give_one_batch_and_one_validation_task(gw) -> None:
    from fleet.queue import TRAIN_QUEUE, VALIDATE_BATCH_TASK

    prefix = _batch(gw.store, f"s3://{gw.bucket}/annotation-batches/b1", pick_clips(3, 3))
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: _ops_post(gw, "/v1/annotation-batches", {"uri": prefix.rstrip("/")}),
                                range(8)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] * 7 + [202], [r.text for r in replies]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    first = next(r.json() for r in replies if r.status_code == 202)
    # nothing was decoded in the request: the row waits for the train queue
    assert first["status"] == "registered" and first["uri"] == prefix and first["duplicate"] is False
    assert first["progress"] == {"checked": 0, "total": 0}
    assert all(r.json()["duplicate"] for r in replies if r.status_code == 200)
    assert _messages(gw, TRAIN_QUEUE) == [(VALIDATE_BATCH_TASK, [first["id"]])]
    assert gw.redis.llen("deliver") == 0
    with gw.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AnnotationBatch)) == 1
    bad = _ops_post(gw, "/v1/annotation-batches", {"uri": "ftp://nowhere/x"})
    assert bad.status_code == 422, bad.text


def test_discovery_and_validation_run_on_the_train_queue() -> None:
    from fleet.queue import DISCOVER_BATCHES_TASK, ROUTES, TRAIN_QUEUE, VALIDATE_BATCH_TASK

    assert ROUTES[DISCOVER_BATCHES_TASK]["queue"] == TRAIN_QUEUE
    assert ROUTES[VALIDATE_BATCH_TASK]["queue"] == TRAIN_QUEUE


class _Killed(Exception):
    pass


def test_validation_commits_per_chunk_and_resumes_where_it_stopped(pg_sessions, s3_store, s3_bucket) -> None:  # noqa: F811
    from training_jobs.batches import add_batch, validate_registered

    rows = pick_clips(7, 3)
    prefix = _batch(s3_store, f"s3://{s3_bucket}/annotation-batches/big", rows, bad=1)
    defaults = training_defaults(validate_chunk_items=3)
    with session_scope(pg_sessions) as s:
        batch_id = add_batch(s, prefix)[0].id

    seen: list[int] = []

    def kill_after_two_chunks(checked: int, total: int) -> None:
        seen.append(checked)
        if len(seen) == 2:
            raise _Killed  # the worker dies after the 2nd chunk's commit

    with pytest.raises(_Killed):
        validate_registered(pg_sessions, s3_store, batch_id, defaults, on_chunk=kill_after_two_chunks)
    bad_id = rows[0]["utt_id"]
    bad_seen = bad_id in sorted(r["utt_id"] for r in rows)[:6]
    with pg_sessions() as s:  # what ops see meanwhile: committed progress, still `registered`
        row = s.get(AnnotationBatch, batch_id)
        assert (row.status, row.n_items, row.n_checked) == (BatchStatus.registered, 7, 6)
        assert row.n_accepted == 6 - bad_seen and row.progress_at is not None
        assert [p["utt_id"] for p in row.problems] == ([bad_id] if bad_seen else [])
    assert seen == [3, 6]

    resumed: list[int] = []
    out = validate_registered(pg_sessions, s3_store, batch_id, defaults, on_chunk=lambda c, t: resumed.append(c))
    assert resumed == [7]  # only the last chunk (1 utterance) was decoded again
    assert out is not None and out.status == BatchStatus.partial
    with pg_sessions() as s:
        row = s.get(AnnotationBatch, batch_id)
        assert (row.n_items, row.n_checked, row.n_accepted, row.n_quarantined) == (7, 7, 6, 1)
        assert [(p["utt_id"], p["code"]) for p in row.problems] == [(bad_id, "score_out_of_range")]
        assert row.validated_at is not None
    # a duplicate task for a validated batch is a no-op
    assert validate_registered(pg_sessions, s3_store, batch_id, defaults) is None


def test_a_second_validator_loses_at_its_first_commit(pg_sessions, s3_store, s3_bucket) -> None:  # noqa: F811
    """Two deliveries of the validation task at once: the progress fence lets one of them write."""
    from training_jobs.batches import add_batch, validate_registered

    prefix = _batch(s3_store, f"s3://{s3_bucket}/annotation-batches/twice", pick_clips(4, 2))
    defaults = training_defaults(validate_chunk_items=2)
    with session_scope(pg_sessions) as s:
        batch_id = add_batch(s, prefix)[0].id
    inner: list = []

    def other_worker_runs_meanwhile(checked: int, total: int) -> None:
        if not inner:  # while the outer run holds its first chunk, another run validates everything
            inner.append(validate_registered(pg_sessions, s3_store, batch_id, defaults))

    # on_chunk fires after each commit: the inner run starts from 2 checked and finishes the batch;
    # the outer run's next commit finds the progress moved on and stops without writing.
    outer = validate_registered(pg_sessions, s3_store, batch_id, defaults, on_chunk=other_worker_runs_meanwhile)
    assert inner[0] is not None and inner[0].status == BatchStatus.accepted
    assert outer is None
    with pg_sessions() as s:
        row = s.get(AnnotationBatch, batch_id)
        assert (row.status, row.n_checked, row.n_accepted, row.problems) == (BatchStatus.accepted, 4, 4, [])


# -- 11: one queued/running job per engine ----------------------------------------------------


def test_the_database_refuses_a_second_pending_job_per_engine(pg_sessions) -> None:  # noqa: F811
    with session_scope(pg_sessions) as s:
        s.add(TrainingJob(trigger="manual", params={}, status=JobStatus.queued))
    with pytest.raises(IntegrityError):
        with session_scope(pg_sessions) as s:
            s.add(TrainingJob(trigger="threshold", params={}, status=JobStatus.running))
    with session_scope(pg_sessions) as s:  # another engine, and finished jobs, are not limited
        s.add(TrainingJob(engine="gop", trigger="manual", params={}, status=JobStatus.queued))
        s.add(TrainingJob(trigger="manual", params={}, status=JobStatus.failed))
        s.add(TrainingJob(trigger="manual", params={}, status=JobStatus.succeeded))


def test_concurrent_threshold_triggers_create_one_job(pg_sessions, s3_store, s3_bucket) -> None:  # noqa: F811
    """The gateway's and the beat's triggers at the same moment: both checked, both inserted."""
    from training_jobs.triggers import maybe_trigger

    with session_scope(pg_sessions) as s:
        s.add(AnnotationBatch(uri="s3://b/x/", name="x", status=BatchStatus.accepted, n_items=20, n_accepted=20))
    defaults = training_defaults(trigger_threshold=5)
    first, second = pg_sessions(), pg_sessions()
    try:
        a = maybe_trigger(first, defaults)
        assert a is not None
        got: dict = {}
        t = threading.Thread(target=lambda: got.update(b=maybe_trigger(second, defaults)))
        t.start()  # blocks on the first transaction's index entry until it commits
        time.sleep(0.5)
        first.commit()
        t.join(30)
        assert not t.is_alive()
        second.commit()
        assert got["b"] is None
    finally:
        first.close()
        second.close()
    with pg_sessions() as s:
        assert s.scalar(select(func.count()).select_from(TrainingJob)) == 1


def test_concurrent_job_requests_create_one_job(gw) -> None:
    from fleet.queue import TRAIN_QUEUE, TRAIN_TASK

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: _ops_post(gw, "/v1/training-jobs", {"params": {"epochs": 1}}), range(6)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [202] + [409] * 5, [r.text for r in replies]
    job_id = next(r.json()["id"] for r in replies if r.status_code == 202)
    for r in replies:
        if r.status_code == 409:
            assert r.json()["detail"]["code"] == "job_pending" and job_id in r.json()["detail"]["message"]
    assert _messages(gw, TRAIN_QUEUE) == [(TRAIN_TASK, [job_id])]
    assert _ops_post(gw, "/v1/training-jobs", {"params": {"epochs": -1}}).status_code == 422


# -- 12: a lost promotion race leaves a candidate -------------------------------------------


def _wait_for_lock_waiter(sessions, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with sessions() as s:
        while time.monotonic() < deadline:
            n = s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")).scalar()
            s.rollback()
            if n:
                return
            time.sleep(0.05)
    raise AssertionError("the promotion never waited for the ops activation")


def test_an_ops_activation_racing_the_promotion_leaves_a_candidate(pg_sessions) -> None:  # noqa: F811
    from db.adapters import activate
    from training_jobs.registry import GateDecision, record_candidate, register_candidate

    with session_scope(pg_sessions) as s:
        register_candidate(s, version="v-ops", uri="s3://b/adapters/v-ops", base_model=BASE, metrics={})
    ops = pg_sessions()
    activate(ops, "v-ops")  # flushed, not committed: ops' request is in flight
    decision = GateDecision(True, "mean SCC 0.5 > 0.1", "scc", ["sentence.total"], 0.5, 0.1)
    metrics: dict = {"n_train": 10}
    got: dict = {}

    def job_registers() -> None:
        try:
            got["out"] = record_candidate(pg_sessions, version="v-job", uri="s3://b/adapters/v-job", base_model=BASE,
                                          metrics=metrics, training_job_id=None, decision=decision,
                                          compared_with=None)
        except Exception as exc:  # what failed the whole job before
            got["error"] = exc

    t = threading.Thread(target=job_registers)
    t.start()
    try:
        _wait_for_lock_waiter(pg_sessions)
    finally:
        ops.commit()
        ops.close()
    t.join(30)
    assert "error" not in got, got.get("error")
    promoted, why = got["out"]
    assert not promoted and why.startswith("kept as candidate") and "v-ops" in why
    assert metrics["promoted"] is False and metrics["promotion"] == why
    with pg_sessions() as s:
        rows = {a.version: (a.status, a.metrics) for a in s.scalars(select(Adapter))}
    assert rows["v-ops"][0] == AdapterStatus.active
    assert rows["v-job"] == (AdapterStatus.candidate, metrics)


def test_the_candidate_is_committed_before_promotion(pg_sessions) -> None:  # noqa: F811
    """Promotion fails for a reason of its own (here: the database refuses it): the candidate row stays."""
    from training_jobs.registry import GateDecision, record_candidate

    with session_scope(pg_sessions) as s:
        s.execute(text("CREATE FUNCTION no_activation() RETURNS trigger AS $$ BEGIN "
                       "IF NEW.status = 'active' THEN RAISE EXCEPTION 'activation refused'; END IF; RETURN NEW; END "
                       "$$ LANGUAGE plpgsql"))
        s.execute(text("CREATE TRIGGER no_activation BEFORE UPDATE ON adapters FOR EACH ROW "
                       "EXECUTE FUNCTION no_activation()"))
    decision = GateDecision(True, "better", "scc", ["sentence.total"], 0.5, 0.1)
    with pytest.raises(Exception, match="activation refused"):
        record_candidate(pg_sessions, version="v-job", uri="s3://b/adapters/v-job", base_model=BASE, metrics={},
                         training_job_id=None, decision=decision, compared_with=None)
    with pg_sessions() as s:
        assert s.scalar(select(Adapter.status).where(Adapter.version == "v-job")) == AdapterStatus.candidate
