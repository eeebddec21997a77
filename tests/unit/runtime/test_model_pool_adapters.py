"""A score worker's ModelPool keeps two adapters in memory, the active one and the previous one
(an instant rollback), and unloads every other version with peft's delete_adapter: promotions
no longer pile adapters up in GPU memory. Tiny Qwen2-Audio, SQLite registry, local object store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from db.adapters import activate
from db.engine import make_engine, make_session_factory, session_scope
from migrations.runner import upgrade
from fleet.settings import Settings
from fleet.storage import ObjectStore

VERSIONS = ("v1", "v2", "v3", "v4")


@pytest.fixture(scope="module")
def adapter_folders(tiny_model_path, tmp_path_factory) -> dict[str, Path]:
    from peft import get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    from pronunciation.adapters import new_lora_config

    root = tmp_path_factory.mktemp("pool-adapters")
    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_path)
    peft_model = get_peft_model(base, new_lora_config())
    out = {}
    for seed, version in enumerate(VERSIONS, start=1):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        peft_model.save_pretrained(root / version)
        out[version] = root / version
    return out


@pytest.fixture
def pool_env(tmp_path, tiny_model_path, adapter_folders):
    from training_jobs.registry import register_candidate, save_adapter
    from workers.model_pool import ModelPool

    settings = Settings(var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'apa.db'}",
                        storage_root=tmp_path / "objects", model_path=str(tiny_model_path), device="cpu")
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    sessions = make_session_factory(engine)
    store = ObjectStore.from_settings(settings)
    with session_scope(sessions) as s:
        for version, folder in adapter_folders.items():
            uri = save_adapter(store, settings, folder, version, {})
            register_candidate(s, version=version, uri=uri, base_model=settings.registry_base_model, metrics={})
    yield ModelPool(settings, sessions, store), sessions
    engine.dispose()


def _lora_params(model, version: str) -> int:
    return sum(p.numel() for n, p in model.model.named_parameters() if f".{version}." in n)


def _promote(sessions, version: str) -> None:
    with session_scope(sessions) as s:
        activate(s, version)


def test_only_the_active_and_the_previous_adapter_stay_loaded(pool_env) -> None:
    pool, sessions = pool_env
    per_adapter = None
    for i, version in enumerate(VERSIONS):
        _promote(sessions, version)
        model = pool.ready_model()
        assert model.active_adapter_version == version
        expected = set(VERSIONS[max(0, i - 1): i + 1])  # this one and the one it replaced
        assert set(model.adapter_versions) == expected, (version, model.adapter_versions)
        per_adapter = per_adapter or _lora_params(model, version)
        for gone in set(VERSIONS[:i]) - expected:  # unloaded: its LoRA weights left the model
            assert _lora_params(model, gone) == 0, gone
        assert sum(_lora_params(model, v) for v in VERSIONS) == per_adapter * len(expected)

    # rollback to the previous version: already loaded, switched in place, the other one kept
    _promote(sessions, "v3")
    model = pool.ready_model()
    assert model.active_adapter_version == "v3" and set(model.adapter_versions) == {"v3", "v4"}
    # the base model without any adapter keeps the last one as the previous
    with session_scope(sessions) as s:
        from db.models import Adapter, AdapterStatus

        s.query(Adapter).filter(Adapter.status == AdapterStatus.active).update({"status": AdapterStatus.retired})
    model = pool.ready_model()
    assert model.active_adapter_version is None and set(model.adapter_versions) == {"v3"}
