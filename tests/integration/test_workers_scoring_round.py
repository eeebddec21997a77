"""One scoring round on SQLite and Postgres with the tiny model: batching, bad input, transient
faults that do not use up attempts, and a poison item that cannot sink its batch."""

from __future__ import annotations

import io
import uuid

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
    assert min(report.claim_ms, report.fetch_ms, report.model_ms, report.save_ms) > 0


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
