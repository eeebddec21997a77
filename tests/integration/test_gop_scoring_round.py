"""A scoring round with the default engine (gop) on SQLite and Postgres: real clips are scored,
and the stored result and its API/callback payload name the engine and its model version."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from db.accounts import create_tenant
from db.engine import session_scope
from db.models import Submission, SubmissionStatus
from db.results import load_submission, submission_result
from fleet.settings import Settings
from fleet.storage import ObjectStore
from workers.model_pool import ModelPool
from workers.scoring import score_round

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speechocean762-sample"
pytestmark = pytest.mark.skipif(not (SAMPLE / "scores.json").is_file(), reason="speechocean762 sample absent")


def test_gop_round_stores_engine_and_model_version(session_factory, tmp_path) -> None:
    from pronunciation.gop.head import shipped_head

    settings = Settings(var_dir=tmp_path / "var", score_batch_size=4)
    assert settings.effective_engine == "gop"
    store = ObjectStore.from_settings(settings)
    with session_scope(session_factory) as s:
        tenant_id = create_tenant(s, "t").id
    ids = []
    for name, text in [("000030012", "MARK IS GOING TO SEE ELEPHANT"), ("000030012b", "ZZQXV WORD")]:
        uri = str(store.for_tenant(tenant_id).root / f"{name}.flac")  # local audio lies in the tenant's own folder
        store.put(uri, (SAMPLE / "audio" / "000030012.flac").read_bytes())
        with session_scope(session_factory) as s:
            sub = Submission(tenant_id=tenant_id, lms_submission_id=name, learner_id="l", course_id="c",
                             reference_text=text, audio_uri=uri, granularity="full")
            s.add(sub)
            s.flush()
            ids.append(sub.id)
    pool = ModelPool(settings, session_factory, store)
    report = score_round(ids[0], settings=settings, sessions=session_factory, store=store, pool=pool)
    assert (report.scored, report.failed) == ([ids[0]], {ids[1]: "unknown_word"})  # a failure names its code
    with session_factory() as s:
        row = load_submission(s, ids[0])
        assert row.status == SubmissionStatus.scored
        assert (row.engine, row.model_version) == ("gop", shipped_head().version)
        assert row.model_name.startswith("gop")
        out = submission_result(row)
    assert out["engine"] == "gop" and out["model_version"].startswith("gop-")
    assert [w["text"] for w in out["scores"]["words"]][:2] == ["MARK", "IS"]
    assert isinstance(uuid.UUID(out["id"]), uuid.UUID)
