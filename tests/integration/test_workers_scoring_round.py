"""One scoring round on SQLite and Postgres with the tiny model: batching, bad input, transient
faults that do not use up attempts, and a poison item that cannot sink its batch."""

from __future__ import annotations

import io
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from db.accounts import create_tenant
from db.engine import session_scope
from db.models import SentenceScore, Submission, SubmissionStatus
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.conftest import free_port
from workers.model_pool import ModelPool
from workers.scoring import score_round


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    from pronunciation.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("m") / "tiny"))


def _speechlike(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 16000, format="FLAC")
    return buf.getvalue()


@pytest.fixture
def env(session_factory, tmp_path, tiny_dir):
    settings = Settings(var_dir=tmp_path / "var", model_path=tiny_dir, score_batch_size=8, max_attempts=3)
    store = ObjectStore.from_settings(settings)
    with session_scope(session_factory) as s:
        tenant_id = create_tenant(s, "t").id

    def submit(text: str, audio: bytes | None, name: str | None = None) -> uuid.UUID:
        name = name or uuid.uuid4().hex[:8]
        uri = str(store.for_tenant(tenant_id).root / f"{name}.flac")  # the tenant's own folder
        if audio is not None:
            store.put(uri, audio)
        with session_scope(session_factory) as s:
            sub = Submission(tenant_id=tenant_id, lms_submission_id=name, learner_id="l", course_id="c",
                             reference_text=text, audio_uri=uri, granularity="sentence_word")
            s.add(sub)
            s.flush()
            return sub.id

    return settings, store, submit


def _make_due(session_factory, sid) -> None:
    """Skip the backoff wait (the policy's delays are tested on their own)."""
    with session_scope(session_factory) as s:
        s.get(Submission, sid).next_attempt_at = None


def _row(session_factory, sid):
    with session_factory() as s:
        return s.get(Submission, sid)


def test_batch_scores_good_rows_and_fails_bad_ones_once(session_factory, env) -> None:
    settings, store, submit = env
    began = time.monotonic()
    good = [submit("I LIKE TO READ BOOKS", _speechlike(2.0, i)) for i in range(3)]
    garbage = submit("I LIKE TO READ BOOKS", b"not audio" * 50)
    missing = submit("I LIKE TO READ BOOKS", None)
    unknown = submit("I LIKE ZZQXV", _speechlike(2.0, 9))
    outside = submit("I LIKE TO READ BOOKS", None)  # a row naming a file outside its tenant's folder
    store.put(str(store.root / "shared.flac"), _speechlike(2.0, 3))
    with session_scope(session_factory) as s:
        s.get(Submission, outside).audio_uri = str(store.root / "shared.flac")
    pool = ModelPool(settings, session_factory, store)
    report = score_round(good[0], settings=settings, sessions=session_factory, store=store, pool=pool)
    assert set(report.scored) == set(good)  # one round claimed the whole batch
    assert report.failed == {garbage: "audio_undecodable", missing: "object_not_found", unknown: "unknown_word",
                             outside: "access_denied"}
    for sid in good:
        row = _row(session_factory, sid)
        assert row.status == SubmissionStatus.scored and row.attempts == 1 and row.raw_output.startswith("Sentence")
        with session_factory() as s:
            assert s.get(SentenceScore, sid).total is not None
    assert _row(session_factory, unknown).error_message.count("ZZQXV") == 1
    # where the round's time went (logged with the task's result): each stage ran and was timed
    assert min(report.wait_ms, report.claim_ms, report.fetch_ms, report.model_ms, report.save_ms) > 0
    # the named row's wait runs from its INSERT to the claim: within this test's own time
    assert report.wait_ms < (time.monotonic() - began) * 1000


def test_store_outage_gives_rows_back_without_using_attempts(session_factory, env, tmp_path) -> None:
    settings, store, submit = env
    sid = submit("I LIKE TO READ BOOKS", _speechlike(2.0, 1))
    with session_scope(session_factory) as s:  # the audio "lives" on an S3 endpoint that is down
        s.get(Submission, sid).audio_uri = "s3://bucket/a.flac"
    down = ObjectStore(tmp_path, backend="s3", endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="a",
                       secret_access_key="b", connect_timeout_s=0.3, max_attempts=1)
    pool = ModelPool(settings, session_factory, down)
    for _ in range(settings.max_attempts + 2):  # more outages than attempts: still not failed
        report = score_round(sid, settings=settings, sessions=session_factory, store=down, pool=pool)
        assert sid in report.retry
        _make_due(session_factory, sid)
    row = _row(session_factory, sid)
    assert (row.status, row.attempts) == (SubmissionStatus.queued, 0)
    assert row.transient_failures == settings.max_attempts + 2  # the release keeps the count


class _PoisonPool(ModelPool):
    """The real pool and model, with a fault injected for one reference word."""

    def ready_model(self):
        real = super().ready_model()

        class Faulty:
            def __getattr__(self, name):
                return getattr(real, name)

            def score(self, inputs, **kw):
                if any("POISON" in i.request for i in inputs):
                    raise RuntimeError("CUDA out of memory (injected)")
                return real.score(inputs, **kw)

        return Faulty()


def test_poison_item_uses_its_own_attempts_only(session_factory, env) -> None:
    settings, store, submit = env
    good = [submit("I LIKE TO READ BOOKS", _speechlike(2.0, i)) for i in range(2)]
    poison = submit("POISON", _speechlike(2.0, 5))
    pool = _PoisonPool(settings, session_factory, store)
    report = score_round(poison, settings=settings, sessions=session_factory, store=store, pool=pool)
    assert set(report.scored) == set(good) and poison in report.retry
    for _ in range(settings.max_attempts):
        _make_due(session_factory, poison)
        score_round(poison, settings=settings, sessions=session_factory, store=store, pool=pool)
    row = _row(session_factory, poison)
    assert (row.status, row.error_code) == (SubmissionStatus.failed, "attempts_exhausted")


class _WatchedStore(ObjectStore):
    """The real S3 store, counting each GET; with `together` set, a GET waits until that many
    GETs are in flight at once (a round that fetched one by one would break the barrier)."""

    def __init__(self, *args, together: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gets: list[str] = []
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(together, timeout=20) if together else None

    def get(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        with self.lock:
            self.gets.append(uri)
        if self.barrier is not None:
            self.barrier.wait()
        return super().get(uri, max_bytes=max_bytes)


@pytest.fixture
def s3_env(session_factory, tmp_path, tiny_dir, s3_server, s3_bucket):
    settings = Settings(var_dir=tmp_path / "var", model_path=tiny_dir, score_batch_size=8, max_attempts=3)
    with session_scope(session_factory) as s:
        tenant_id = create_tenant(s, "t", allowed_buckets=[s3_bucket]).id

    def make_store(together: int = 0) -> _WatchedStore:
        return _WatchedStore(tmp_path / "objects", backend="s3", endpoint_url=s3_server, access_key_id="test",
                             secret_access_key="test", max_attempts=1, together=together)

    def submit(store: ObjectStore, name: str, audio: bytes | None) -> uuid.UUID:
        uri = f"s3://{s3_bucket}/{name}.flac"
        if audio is not None:
            store.put(uri, audio)
        with session_scope(session_factory) as s:
            sub = Submission(tenant_id=tenant_id, lms_submission_id=name, learner_id="l", course_id="c",
                             reference_text="I LIKE TO READ BOOKS", audio_uri=uri, granularity="sentence_word")
            s.add(sub)
            s.flush()
            return sub.id

    return settings, make_store, submit, s3_bucket


def test_batch_recordings_are_fetched_at_once_and_the_hinted_one_only_once(session_factory, s3_env) -> None:
    settings, make_store, submit, bucket = s3_env
    store = make_store(together=3)  # the hinted GET (started before the claim) + the two others
    good = [submit(store, f"good{i}", _speechlike(1.5, i)) for i in range(3)]
    store.gets.clear()
    with ThreadPoolExecutor(settings.score_batch_size + 1) as fetcher:
        report = score_round(good[0], settings=settings, sessions=session_factory, store=store,
                             pool=ModelPool(settings, session_factory, store),
                             audio_hint=f"s3://{bucket}/good0.flac", fetcher=fetcher)
    assert set(report.scored) == set(good) and not report.failed and not report.retry
    # the hinted object was fetched once (before the claim), not again in the batch
    assert sorted(store.gets) == sorted(f"s3://{bucket}/good{i}.flac" for i in range(3))


def test_a_hint_that_does_not_match_the_row_is_not_used(session_factory, s3_env) -> None:
    settings, make_store, submit, bucket = s3_env
    store = make_store()
    sid = submit(store, "real", _speechlike(1.5, 1))
    missing = submit(store, "missing", None)
    store.put(f"s3://{bucket}/decoy.flac", b"not audio" * 50)  # what a wrong hint would decode
    with ThreadPoolExecutor(settings.score_batch_size + 1) as fetcher:
        pool = ModelPool(settings, session_factory, store)
        report = score_round(sid, settings=settings, sessions=session_factory, store=store, pool=pool,
                             audio_hint=f"s3://{bucket}/decoy.flac", fetcher=fetcher)
        assert report.scored == [sid]  # the row's own recording, not the decoy
        assert report.failed == {missing: "object_not_found"}  # a fetch in a thread fails as one in-line
        # a hinted GET that fails ends the row exactly as the in-line GET would
        gone = submit(store, "gone", None)
        report = score_round(gone, settings=settings, sessions=session_factory, store=store, pool=pool,
                             audio_hint=f"s3://{bucket}/gone.flac", fetcher=fetcher)
    assert report.failed == {gone: "object_not_found"}
    assert store.gets.count(f"s3://{bucket}/gone.flac") == 1
    assert (_row(session_factory, sid).status, _row(session_factory, gone).error_code) == (
        SubmissionStatus.scored, "object_not_found")
