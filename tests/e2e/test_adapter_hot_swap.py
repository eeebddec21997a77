"""A running score worker follows the registry: ops promote an adapter and the next batch uses it,
without a restart; every result records the adapter version that produced it."""

from __future__ import annotations

import pytest

from db.engine import session_scope
from fleet.settings import Settings
from fleet.storage import ObjectStore
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.slow


def _random_adapter(model_dir: str, out, seed: int):
    import torch
    from peft import get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    from pronunciation.adapters import new_lora_config

    torch.manual_seed(seed)
    model = get_peft_model(Qwen2AudioForConditionalGeneration.from_pretrained(model_dir), new_lora_config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero (a no-op adapter); make it change outputs
    model.save_pretrained(out)
    return out


def test_running_worker_switches_adapter_without_restart(fleet_factory, sample_items, tiny_model_dir, tmp_path) -> None:
    from training_jobs.registry import activate, register_candidate, save_adapter

    fleet = fleet_factory("redis")
    settings = Settings(**{k[4:].lower(): v for k, v in fleet.env.items() if k.startswith("APA_")})
    store = ObjectStore.from_settings(settings)
    item = sample_items[50]
    uri = fleet.upload("in/swap.flac", (SAMPLE_DIR / item["audio"]).read_bytes())

    def score_once() -> tuple[str | None, str]:
        r = fleet.submit(fleet.submission_body(item, uri))
        assert r.status_code == 202, r.text
        sub = fleet.wait_finished([r.json()["id"]], timeout_s=180)[r.json()["id"]]
        assert sub.status.value == "scored", (sub.error_code, sub.error_message)
        return sub.adapter_version, sub.raw_output

    base_version, base_text = score_once()
    assert base_version is None
    for version, seed in (("v-test-1", 1), ("v-test-2", 2)):
        folder = _random_adapter(tiny_model_dir, tmp_path / version, seed)
        with session_scope(fleet.sessions) as s:
            adapter_uri = save_adapter(store, settings, folder, version, {})
            register_candidate(s, version=version, uri=adapter_uri, base_model=settings.registry_base_model, metrics={})
            activate(s, version)
    # v-test-2 is active now (v-test-1 was retired by it): the same worker process scores with it
    version, text = score_once()
    assert version == "v-test-2" and text != base_text
    with session_scope(fleet.sessions) as s:  # rollback to v-test-1
        activate(s, "v-test-1")
    assert score_once()[0] == "v-test-1"
    assert fleet.procs["score"].poll() is None  # never restarted
