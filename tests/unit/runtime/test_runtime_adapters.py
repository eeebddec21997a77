"""LoRA adapters on the ScoringModel: load, switch without reloading the base, unload, record the version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pronunciation.adapters import LORA_TARGET_REGEX, new_lora_config
from pronunciation.runtime import ScoringInput


@pytest.fixture(scope="module")
def adapters(tiny_model_path, tmp_path_factory):
    """Two LoRA adapters on the tiny model with random, non-zero B matrices."""
    from peft import get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    root = tmp_path_factory.mktemp("adapters")
    paths = {}
    for version, seed in (("v1", 1), ("v2", 2)):
        base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_path)
        peft_model = get_peft_model(base, new_lora_config())
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        peft_model.save_pretrained(root / version)
        paths[version] = root / version
    return paths


@pytest.fixture(scope="module")
def inputs(h):
    rng = np.random.default_rng(3)
    items = []
    for words in (["MARK", "IS"], ["ELEPHANT"], ["TO", "SEE", "CLOTH"]):
        request = f"Reference text: {' '.join(words)}."
        items.append(ScoringInput(h.make_audio(rng), h.INSTRUCTIONS, request, h.full_template(words)))
    return items


def _values(outputs):
    return [o.values for o in outputs]


def test_lora_config_targets_only_language_model(tiny_model_path):
    from peft import get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    cfg = new_lora_config()
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16, 0.05)
    assert cfg.target_modules == LORA_TARGET_REGEX
    model = get_peft_model(Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_path), cfg)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted and all(".language_model." in n for n in adapted)
    kinds = {n.rsplit(".", 1)[-1] for n in adapted}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(adapted) == 7 * 2  # two decoder layers
    assert not any("audio_tower" in n or "multi_modal_projector" in n or "lm_head" in n for n in adapted)


def test_switching_adapters_changes_and_restores_outputs(load_scoring_model, adapters, inputs):
    sm = load_scoring_model()
    base_module = sm.model
    base = sm.score(inputs)
    assert all(o.adapter_version is None and o.model_is_tiny for o in base)

    sm.load_adapter(adapters["v1"], "v1")  # loaded, not active yet
    assert sm.active_adapter_version is None
    assert _values(sm.score(inputs)) == _values(base)

    sm.activate("v1")
    out1 = sm.score(inputs)
    assert [o.adapter_version for o in out1] == ["v1"] * len(inputs)
    assert _values(out1) != _values(base)

    sm.load_adapter(adapters["v2"], "v2", activate=True)
    assert sm.active_adapter_version == "v2" and set(sm.adapter_versions) == {"v1", "v2"}
    out2 = sm.score(inputs, batch_size=2)
    assert [o.adapter_version for o in out2] == ["v2"] * len(inputs)
    assert _values(out2) != _values(out1)

    # the base model was never reloaded: the same module object carries the LoRA layers
    assert sm.model.get_base_model() is base_module

    sm.activate("v1")
    assert _values(sm.score(inputs)) == _values(out1)  # exactly
    sm.activate(None)
    back = sm.score(inputs)
    assert _values(back) == _values(base) and all(o.adapter_version is None for o in back)

    sm.unload_adapter("v1")
    assert sm.adapter_versions == ("v2",)
    sm.activate("v2")
    assert _values(sm.score(inputs, batch_size=2)) == _values(out2)
    sm.unload_adapter("v2")
    assert sm.active_adapter_version is None and sm.adapter_versions == ()
    assert _values(sm.score(inputs)) == _values(base)

    with pytest.raises(KeyError):
        sm.activate("v1")


def test_load_with_adapter(load_scoring_model, adapters, inputs):
    reference = load_scoring_model()
    reference.load_adapter(adapters["v2"], "v2", activate=True)
    expected = reference.score(inputs[:2])

    sm = load_scoring_model(adapter_path=adapters["v2"], adapter_version="2026-01-01")
    assert sm.active_adapter_version == "2026-01-01"
    out = sm.score(inputs[:2])
    assert [o.adapter_version for o in out] == ["2026-01-01"] * 2
    assert _values(out) == _values(expected)
    with pytest.raises(ValueError, match="already loaded"):
        sm.load_adapter(adapters["v1"], "2026-01-01")


def test_free_generate_runs_with_adapter(load_scoring_model, adapters, inputs):
    sm = load_scoring_model(adapter_path=adapters["v1"], adapter_version="v1")
    texts = sm.free_generate(inputs[:2], max_new_tokens=6)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_score_groups_by_instructions_and_keeps_order(load_scoring_model, inputs):
    from dataclasses import replace

    sm = load_scoring_model()
    mixed = [inputs[0], replace(inputs[1], instructions="Other instructions."), inputs[2], replace(inputs[0], instructions="Other instructions.")]
    together = sm.score(mixed, batch_size=2)
    alone = [sm.score([x])[0] for x in mixed]
    for a, b in zip(together, alone):
        assert a.text == b.text
        for k in a.values:
            assert a.values[k][0] == b.values[k][0]
            assert a.values[k][1] == pytest.approx(b.values[k][1], abs=1e-4)
