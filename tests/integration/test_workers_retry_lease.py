"""Scoring under an object-store outage and dead workers, on SQLite and Postgres: the shared retry
policy's state lives on the row (backoff grows, claims take only due rows, one follow-up message
per round, dead-letter by age), and leases refreshed by a heartbeat return a dead worker's rows
within seconds while a long batch that still beats is never taken over."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from db.accounts import create_tenant
from db.engine import make_engine, make_session_factory, session_scope
from db.models import Submission, SubmissionStatus, utcnow
from fleet.retry import RETRY_WINDOW_EXHAUSTED, as_utc
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.conftest import free_port
from workers.claim import claim_batch
from workers.lease import LeaseKeeper, refresh_leases
from workers.model_pool import ModelPool
from workers.scoring import score_round
from workers.sweeper import sweep


@pytest.fixture
def rows(session_factory):
    with session_scope(session_factory) as s:
        tenant_id = create_tenant(s, "t").id

    def make(n: int) -> list[uuid.UUID]:
        ids = []
        with session_scope(session_factory) as s:
            for i in range(n):
                sub = Submission(tenant_id=tenant_id, lms_submission_id=uuid.uuid4().hex, learner_id="l",
                                 course_id="c", reference_text="I LIKE TO READ BOOKS",
                                 audio_uri=f"s3://bucket/{i}.flac", granularity="sentence")
                s.add(sub)
                s.flush()
                ids.append(sub.id)
        return ids
    return make


@pytest.fixture
def outage(tmp_path):
    """Settings and an S3 store whose endpoint is down (nothing listens on the port)."""
    # base 10 s: the first waits (5-10 s) outlast a slow round on a busy machine
    settings = Settings(var_dir=tmp_path / "var", score_batch_size=8, max_attempts=3, retry_base_s=10.0,
                        retry_cap_s=3000.0, retry_max_age_s=3600.0)
    store = ObjectStore(tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="a",
                        secret_access_key="b", connect_timeout_s=0.2, max_attempts=1)
    return settings, store


def _get(session_factory, sid) -> Submission:
    with session_factory() as s:
        return s.get(Submission, sid)


def test_outage_backs_off_per_row_without_multiplying_messages(session_factory, rows, outage) -> None:
    settings, store = outage
    pool = ModelPool(settings, session_factory, store)
    ids = rows(8)
    report = score_round(ids[0], settings=settings, sessions=session_factory, store=store, pool=pool)
    assert set(report.retry) == set(ids)  # the whole batch went back...
    assert report.wake_up is not None and report.wake_up[1] == min(report.retry.values())  # ...with ONE message
    for sid in ids:
        row = _get(session_factory, sid)
        assert (row.status, row.attempts, row.transient_failures) == (SubmissionStatus.queued, 0, 1)
        assert row.lease_expires_at is None and as_utc(row.next_attempt_at) > utcnow()
    # The other rows' own messages arrive now: nothing is due, nothing is claimed, and each message
    # is handed on to when its row is due (one in, at most one out).
    early = score_round(ids[3], settings=settings, sessions=session_factory, store=store, pool=pool)
    assert early.retry == {} and early.scored == [] and early.wake_up is not None
    assert early.wake_up[0] == ids[3] and 0 < early.wake_up[1] <= 10.0
    with session_factory() as s:
        assert claim_batch(s, ids[5], 8) == []

    # Round after round the count on the row grows and so does the wait: no reset to 1 on release.
    waits = []
    for n in range(2, 9):
        with session_scope(session_factory) as s:
            s.execute(update(Submission).where(Submission.id == ids[0]).values(next_attempt_at=utcnow()))
        r = score_round(ids[0], settings=settings, sessions=session_factory, store=store, pool=pool)
        assert set(r.retry) == {ids[0]}  # only the due row was claimed
        row = _get(session_factory, ids[0])
        assert row.transient_failures == n and row.attempts == 0
        waits.append(r.retry[ids[0]])
    assert all(10.0 * 2 ** (n - 1) / 2 <= w <= 10.0 * 2 ** (n - 1) for n, w in enumerate(waits, start=2)), waits
    assert waits[-1] >= 640.0  # far past the old 8 s ceiling

    # Failing for longer than the window: dead-lettered with the policy's code, not retried.
    with session_scope(session_factory) as s:
        s.execute(update(Submission).where(Submission.id == ids[0]).values(
            next_attempt_at=utcnow(), failing_since=utcnow() - timedelta(seconds=3601)))
    r = score_round(ids[0], settings=settings, sessions=session_factory, store=store, pool=pool)
    assert r.failed == {ids[0]: RETRY_WINDOW_EXHAUSTED} and r.wake_up is None
    row = _get(session_factory, ids[0])
    assert (row.status, row.error_code) == (SubmissionStatus.failed, RETRY_WINDOW_EXHAUSTED)
    assert "9 failures" in row.error_message


def test_lease_keeps_a_long_batch_and_returns_a_dead_workers_rows(session_factory, rows) -> None:
    ids = rows(3)
    with session_factory() as s:
        claims = claim_batch(s, ids[0], 8, lease_s=1.0)
    assert {c.id for c in claims} == set(ids)
    # A long batch (3 s with a 1 s lease) whose worker beats is never taken over, even with the
    # old 960 s deadline out of the way.
    with LeaseKeeper(session_factory, claims, lease_s=1.0, interval_s=0.2):
        for _ in range(6):
            time.sleep(0.5)
            with session_factory() as s:
                report = sweep(s, republish_after_s=300, stuck_after_s=960, max_attempts=5)
            assert report.republished == [] and report.dead_lettered == []
    assert all(_get(session_factory, i).status == SubmissionStatus.running for i in ids)
    # The worker dies (no more beats): once the lease expires the sweeper gives the rows back,
    # although stuck_after_s (the old rule) is 960 s.
    time.sleep(1.2)
    with session_factory() as s:
        report = sweep(s, republish_after_s=300, stuck_after_s=960, max_attempts=5)
    assert set(report.republished) == set(ids)
    for sid in ids:
        row = _get(session_factory, sid)
        assert (row.status, row.lease_expires_at, row.attempts) == (SubmissionStatus.queued, None, 1)
    # Another worker claims them; the dead worker's lease refresh (if it woke up) touches nothing.
    with session_factory() as s:
        again = claim_batch(s, ids[0], 8, lease_s=30.0)
        assert {c.attempt for c in again} == {2}
        assert refresh_leases(s, claims, 30.0) == 0
        assert refresh_leases(s, again, 30.0) == 3


def test_rows_claimed_without_a_lease_use_the_old_deadline(session_factory, rows) -> None:
    """Rows claimed by a worker from before leases (rolling upgrade) still come back."""
    ids = rows(1)
    with session_scope(session_factory) as s:
        s.execute(update(Submission).where(Submission.id == ids[0]).values(
            status=SubmissionStatus.running, attempts=1, lease_expires_at=None,
            updated_at=utcnow() - timedelta(seconds=100)))
    with session_factory() as s:
        assert sweep(s, republish_after_s=300, stuck_after_s=200, max_attempts=5).republished == []
        assert sweep(s, republish_after_s=300, stuck_after_s=50, max_attempts=5).republished == ids


def test_a_claim_skips_rows_another_worker_holds_and_fills_the_batch(pg_database: str) -> None:
    """Postgres claims in one statement (workers/claim.py `_CLAIM_LOCKING`): rows another worker
    holds are skipped, not waited for; the named row comes first; the rest are the oldest due rows;
    a batch stays full when the named row is taken."""
    from migrations.runner import upgrade

    upgrade(pg_database)
    engine = make_engine(pg_database)
    sessions = make_session_factory(engine)
    try:
        t0 = utcnow() - timedelta(hours=1)
        with session_scope(sessions) as s:
            tenant_id = create_tenant(s, "t").id
            subs = [Submission(tenant_id=tenant_id, lms_submission_id=f"r{i}", learner_id="l", course_id="c",
                               reference_text="I LIKE TO READ BOOKS", audio_uri=f"s3://bucket/{i}.flac",
                               granularity="sentence", created_at=t0 + timedelta(minutes=i)) for i in range(6)]
            s.add_all(subs)
            s.flush()
            ids = [sub.id for sub in subs]
        holder = sessions()  # another worker, mid-claim: rows 0 and 2 locked
        holder.execute(select(Submission.id).where(Submission.id.in_([ids[0], ids[2]])).with_for_update()).all()
        with sessions() as s:  # a batch of one is the named row or nothing
            assert claim_batch(s, ids[0], 1) == []
        with sessions() as s:
            got = claim_batch(s, ids[0], 3)
        assert [c.id for c in got] == sorted([ids[1], ids[3], ids[4]], key=str)  # 0 held: three others, oldest first
        holder.rollback()
        holder.close()
        with sessions() as s:
            again = claim_batch(s, ids[2], 3)
        assert again[0].id == ids[2] and {c.id for c in again} == {ids[2], ids[0], ids[5]}
        assert {c.attempt for c in got + again} == {1}
    finally:
        engine.dispose()
