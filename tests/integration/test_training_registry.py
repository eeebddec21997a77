"""(c) The adapter registry on SQLite and a real Postgres: activation retires the previous active
adapter in one transaction, rollback restores it, the database refuses two actives, and the
promotion step follows the gate both ways."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from db.engine import session_scope
from db.models import Adapter, AdapterStatus
from training_jobs.registry import (
    RegistryError,
    activate,
    active_adapter,
    gate,
    list_adapters,
    previous_active,
    promote_if_better,
    register_candidate,
    rollback,
)

BASE = "tiny-qwen2-audio"


def _metrics(scc: float) -> dict:
    cell = {"pcc": scc, "scc": scc, "rmse": 1.0, "n": 20, "reason": None}
    return {a: {"expected": cell, "argmax": cell}
            for a in ("sentence.total", "sentence.accuracy", "sentence.fluency", "sentence.prosody", "word.total")}


def _add(s, version: str, scc: float = 0.5, base: str = BASE) -> Adapter:
    return register_candidate(s, version=version, uri=f"s3://b/adapters/{version}", base_model=base,
                              metrics=_metrics(scc))


def _statuses(factory) -> dict[str, str]:
    with factory() as s:
        return {a.version: a.status.value for a in s.scalars(select(Adapter))}


def test_activate_retires_the_previous_and_rollback_restores_it(session_factory) -> None:
    with session_scope(session_factory) as s:
        for v in ("v1", "v2", "v3"):
            _add(s, v)
        _add(s, "other-v1", base="another-base")
    with session_scope(session_factory) as s:
        activate(s, "v1")
        activate(s, "other-v1")
    assert _statuses(session_factory) == {"v1": "active", "v2": "candidate", "v3": "candidate", "other-v1": "active"}
    with session_scope(session_factory) as s:
        v2 = s.scalar(select(Adapter).where(Adapter.version == "v2"))
        activate(s, v2.id)  # by id as well as by version
    assert _statuses(session_factory)["v1"] == "retired"
    assert _statuses(session_factory)["v2"] == "active"
    with session_scope(session_factory) as s:
        assert previous_active(s, BASE).version == "v1"
        assert rollback(s, BASE).version == "v1"
    assert _statuses(session_factory) == {"v1": "active", "v2": "retired", "v3": "candidate", "other-v1": "active"}
    with session_scope(session_factory) as s:
        assert rollback(s, BASE).version == "v2"  # rolling back a rollback goes forward again
        assert activate(s, "v2").status == AdapterStatus.active  # idempotent
    with session_scope(session_factory) as s:
        assert [a.version for a in list_adapters(s, BASE)] == ["v3", "v2", "v1"]
        assert active_adapter(s, BASE).version == "v2"
        with pytest.raises(RegistryError):
            activate(s, "v404")
        with pytest.raises(RegistryError):
            rollback(s, "never-trained-base")


def test_the_database_refuses_two_active_adapters(session_factory) -> None:
    with session_scope(session_factory) as s:
        _add(s, "v1")
        _add(s, "v2")
    with session_scope(session_factory) as s:
        activate(s, "v1")
    with pytest.raises(IntegrityError):
        with session_scope(session_factory) as s:
            s.execute(update(Adapter).where(Adapter.version == "v2").values(status=AdapterStatus.active))
    assert _statuses(session_factory) == {"v1": "active", "v2": "candidate"}


def test_promotion_follows_the_gate_both_ways(session_factory) -> None:
    with session_scope(session_factory) as s:
        first = _add(s, "v1", scc=0.4)
        decision = gate(first.metrics, _metrics(0.1), ["sentence.total", "word.total"])  # vs the base model
        assert promote_if_better(s, first, decision, compared_with=None) == (True, f"promoted: {decision.reason}")
    with session_scope(session_factory) as s:
        worse = _add(s, "v2", scc=0.3)
        promoted, why = promote_if_better(s, worse, gate(worse.metrics, _metrics(0.4), ["sentence.total"]),
                                          compared_with="v1")
        assert not promoted and "0.300 <= 0.400" in why
    with session_scope(session_factory) as s:
        better = _add(s, "v3", scc=0.6)
        decision = gate(better.metrics, _metrics(0.4), ["sentence.total"])
        assert promote_if_better(s, better, decision, compared_with="v1", auto_promote=False)[0] is False
        # compared with v1, but ops activated v2 meanwhile: no automatic promotion over their choice
        activate(s, "v2")
        promoted, why = promote_if_better(s, better, decision, compared_with="v1")
        assert not promoted and "changed to v2" in why
        promoted, _ = promote_if_better(s, better, decision, compared_with="v2")
        assert promoted
    assert _statuses(session_factory) == {"v1": "retired", "v2": "retired", "v3": "active"}


@pytest.mark.parametrize("model_path", ["", "/models/qwen2-audio-7b-instruct"])
def test_registry_and_model_pool_agree_on_the_base_model_key(tmp_path, model_path) -> None:
    from fleet.settings import Settings
    from training_jobs.registry import base_model_name
    from workers.model_pool import ModelPool

    settings = Settings(var_dir=tmp_path, model_path=model_path)
    assert base_model_name(settings) == ModelPool(settings, None, None).base_model
