"""Annotation batches in moto's S3 and a real Postgres: registration stores status, counts and
per-utterance problems; discovery needs the completion marker and registers (the validation task
validates); new accepted utterances past the threshold create one job; stranded jobs and stalled
validations are found for re-publishing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import AnnotationBatch, BatchStatus, JobStatus, TrainingJob
from tests.conftest import SAMPLE_DIR
from tests.training_support import (
    make_pg_database,
    pick_clips,
    so_entry,
    training_defaults,
    write_batch,
)
from training_jobs.batches import (
    discover_batches,
    register_batch,
    stalled_validations,
    validate_registered,
)
from training_jobs.config import ParamsError
from training_jobs.lease import job_lock
from training_jobs.triggers import (
    JobPending,
    create_job,
    jobs_to_wake,
    maybe_trigger,
    unused_accepted_items,
)


@pytest.fixture
def sessions(pg_server):
    from db.engine import make_engine, make_session_factory

    url, drop = make_pg_database(pg_server)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()
    drop()


def _batch(store, prefix, rows, *, bad: int = 0, complete: bool = True) -> str:
    scores = {r["utt_id"]: so_entry(r) for r in rows}
    for r in rows[:bad]:
        scores[r["utt_id"]]["fluency"] = 42
    audio = {f"{r['utt_id']}.flac": (SAMPLE_DIR / r["audio"]).read_bytes() for r in rows}
    return write_batch(store, prefix, scores, audio, complete=complete)


def _discover(sessions, store, root, defaults) -> list[AnnotationBatch]:
    """What the beat and the validation tasks do: register new complete batches, then validate each."""
    with session_scope(sessions) as s:
        new = [b.id for b in discover_batches(s, store, root)]
    return [validate_registered(sessions, store, batch_id, defaults) for batch_id in new]


def test_register_discover_and_trigger(sessions, s3_store, s3_bucket) -> None:
    rows = pick_clips(9, 3)
    root = f"s3://{s3_bucket}/annotation-batches/"
    defaults = training_defaults(trigger_threshold=5)
    good = _batch(s3_store, root + "2025-01-good", rows[:3])
    partial = _batch(s3_store, root + "2025-02-partial", rows[3:6], bad=1)
    _batch(s3_store, root + "2025-03-uploading", rows[6:9], complete=False)

    found = _discover(sessions, s3_store, root, defaults)
    assert sorted(b.uri for b in found) == [good, partial]
    with sessions() as s:
        by_uri = {b.uri: b for b in s.scalars(select(AnnotationBatch))}
    assert by_uri[good].status == BatchStatus.accepted and (by_uri[good].n_items, by_uri[good].n_accepted) == (3, 3)
    p = by_uri[partial]
    assert p.status == BatchStatus.partial and (p.n_items, p.n_accepted, p.n_quarantined) == (3, 2, 1)
    assert p.problems == [{"utt_id": rows[3]["utt_id"], "code": "score_out_of_range",
                           "message": "sentence fluency = 42 is outside 0..10"}]
    assert p.name == "2025-02-partial" and p.validated_at is not None

    # a second scan finds nothing new; the marker makes the third batch visible
    assert _discover(sessions, s3_store, root, defaults) == []
    s3_store.put(root + "2025-03-uploading/_COMPLETE", b"")
    assert [b.uri for b in _discover(sessions, s3_store, root, defaults)] == [root + "2025-03-uploading/"]

    # registering again is idempotent; `reject` policy on re-validation refuses the partial batch
    with session_scope(sessions) as s:
        assert register_batch(s, s3_store, partial.rstrip("/"), defaults).status == BatchStatus.partial
        row = register_batch(s, s3_store, partial, training_defaults(batch_policy="reject"), revalidate=True)
        assert row.status == BatchStatus.rejected and row.n_accepted == 0 and row.n_quarantined == 1

    with session_scope(sessions) as s:
        assert unused_accepted_items(s) == 6
        job = maybe_trigger(s, defaults)
        assert job is not None and job.trigger == "threshold" and job.status == JobStatus.queued
    with session_scope(sessions) as s:
        assert maybe_trigger(s, defaults) is None  # one pending job at a time


def test_a_stalled_validation_is_found_for_the_scan(sessions, s3_store, s3_bucket) -> None:
    """A registered batch whose validation task was lost (or whose worker died) shows no progress
    for `revalidate_after_s`: the beat publishes its validation again."""
    root = f"s3://{s3_bucket}/elsewhere/"
    prefix = _batch(s3_store, root + "b1", pick_clips(2, 2), complete=False)
    defaults = training_defaults(revalidate_after_s=60)
    with session_scope(sessions) as s:
        row = register_batch(s, s3_store, prefix, defaults, validate=False)
        assert row.status == BatchStatus.registered
    with sessions() as s:
        assert stalled_validations(s, defaults) == []  # just registered: its task is on its way
    with session_scope(sessions) as s:
        s.get(AnnotationBatch, row.id).progress_at = datetime.now(timezone.utc) - timedelta(minutes=5)
    with sessions() as s:
        assert stalled_validations(s, defaults) == [row.id]
    done = validate_registered(sessions, s3_store, row.id, defaults)
    assert (done.uri, done.status) == (prefix, BatchStatus.accepted)
    with sessions() as s:
        assert stalled_validations(s, defaults) == []


def test_missing_scores_is_a_rejected_batch_with_a_batch_level_problem(sessions, s3_store, s3_bucket) -> None:
    prefix = write_batch(s3_store, f"s3://{s3_bucket}/b/none", None, {})
    with session_scope(sessions) as s:
        row = register_batch(s, s3_store, prefix, training_defaults())
        assert row.status == BatchStatus.rejected
        assert row.problems == [{"utt_id": None, "code": "missing_scores", "message": f"no scores.json under {prefix}"}]


def test_create_job_checks_params_and_stranded_jobs_are_found(sessions) -> None:
    defaults = training_defaults(stuck_queued_after_s=60)
    with session_scope(sessions) as s:
        with pytest.raises(ParamsError):
            create_job(s, "manual", {"epoch": 2}, defaults)
        fresh = create_job(s, "manual", {"epochs": 2}, defaults)
        with pytest.raises(JobPending, match=str(fresh.id)):  # one queued/running job per engine
            create_job(s, "manual", {}, defaults)
        old = create_job(s, "manual", {}, defaults, engine="e-old")
        old.created_at = datetime.now(timezone.utc) - timedelta(hours=1)
        crashed = create_job(s, "manual", {}, defaults, engine="e-crashed")
        crashed.status = JobStatus.running
        alive = create_job(s, "manual", {}, defaults, engine="e-alive")
        alive.status = JobStatus.running
    engine = sessions.kw["bind"]
    with job_lock(engine, alive.id) as got:  # a live run holds its lock
        assert got
        with sessions() as s:
            assert set(jobs_to_wake(s, defaults)) == {old.id, crashed.id}
        with job_lock(engine, alive.id) as again:
            assert not again
    with sessions() as s:
        assert fresh.id not in jobs_to_wake(s, defaults)
        assert s.get(TrainingJob, fresh.id).params == {"epochs": 2}


def test_a_failing_job_is_recorded_and_not_rerun_by_stale_messages(sessions, s3_store, s3_bucket, tmp_path) -> None:
    from fleet.storage import ObjectStore
    from tests.training_support import settings_for
    from training_jobs.job import TrainingError, run_training_job

    settings = settings_for(tmp_path, "postgresql://unused", tmp_path / "no-model-needed")
    store = ObjectStore(tmp_path / "objects")
    defaults = training_defaults(max_job_attempts=2)
    with session_scope(sessions) as s:
        job_id = create_job(s, "threshold", {}, defaults).id
    with pytest.raises(TrainingError, match="no accepted annotation batches"):
        run_training_job(job_id, settings, sessions, store, defaults=defaults)
    with sessions() as s:
        job = s.get(TrainingJob, job_id)
        assert job.status == JobStatus.failed and job.attempts == 1
        assert "no accepted annotation batches" in job.error and "failed: TrainingError" in job.log
    # a duplicate queue message finds it failed and leaves it alone
    assert run_training_job(job_id, settings, sessions, store, defaults=defaults).status == JobStatus.failed
    with sessions() as s:
        assert s.get(TrainingJob, job_id).attempts == 1
    # an operator's retry runs it again; past max_job_attempts it gives up without running
    with pytest.raises(TrainingError):
        run_training_job(job_id, settings, sessions, store, defaults=defaults, retry_failed=True)
    out = run_training_job(job_id, settings, sessions, store, defaults=defaults, retry_failed=True)
    with sessions() as s:
        job = s.get(TrainingJob, job_id)
    assert out.status == JobStatus.failed and job.attempts == 2 and "gave up after 2 attempts" in job.error

    # the threshold trigger does not re-create a job that failed on the same data...
    rows = pick_clips(6, 3)
    root = f"s3://{s3_bucket}/t/"
    _batch(s3_store, root + "b1", rows[:3])
    _discover(sessions, s3_store, root, defaults)
    with session_scope(sessions) as s:
        fail = create_job(s, "threshold", {}, defaults)
        fail.status = JobStatus.failed
    with session_scope(sessions) as s:
        assert maybe_trigger(s, training_defaults(trigger_threshold=3)) is None
    # ...until a new batch is accepted
    _batch(s3_store, root + "b2", rows[3:])
    _discover(sessions, s3_store, root, defaults)
    with session_scope(sessions) as s:
        assert maybe_trigger(s, training_defaults(trigger_threshold=3)) is not None


def test_a_lost_lock_connection_ends_the_lease(sessions) -> None:
    """If the connection holding a job's advisory lock dies, the run learns it at its next
    progress write (and stops) instead of training on beside a second worker."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from training_jobs.recorder import JobRecorder

    with session_scope(sessions) as s:
        job = create_job(s, "manual", {}, training_defaults())
    engine = sessions.kw["bind"]
    with job_lock(engine, job.id) as lease:
        assert lease
        rec = JobRecorder(sessions, job.id, interval_s=0, lease=lease)
        rec.progress(1, 10, 0.1, 2.0)  # held: the write goes through
        pid = lease._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        lease._conn.commit()
        with engine.connect() as other:  # e.g. a failover or an idle timeout
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            other.commit()
        with pytest.raises(OperationalError):
            rec.progress(2, 10, 0.2, 1.9)
        with job_lock(engine, job.id) as second:  # the lock went with the connection
            assert second
    with sessions() as s:
        assert s.get(TrainingJob, job.id).step == 1
