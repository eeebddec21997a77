"""benchmarks/gpu_check.py builds the model the GPU figures are quoted for: check its shape offline.

The device run is rare and costly, so what it measures must be right before it runs. A wrong
config would give wrong GPU figures. Here the full-size model is built on the meta device (no memory,
no weights) and compared with Qwen2-Audio-7B-Instruct's published shape. The committed clip
sample is also checked to load through the production prompt/template path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from pronunciation.tiny_model import train_tokenizer

DATA_SAMPLE = Path(gpu_check.__file__).resolve().parent / "data_sample"


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def test_full_config_has_qwen2_audio_7b_shape(tokenizer) -> None:
    config = gpu_check.build_config(tokenizer, tiny=False)
    text, audio = config.text_config, config.audio_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (4096, 32, 32, 32)
    assert (text.intermediate_size, text.vocab_size) == (11008, 156032)
    assert (audio.d_model, audio.encoder_layers, audio.encoder_attention_heads, audio.encoder_ffn_dim) == (1280, 32, 20, 5120)
    assert audio.num_mel_bins == 128
    assert config.audio_token_index == tokenizer.convert_tokens_to_ids("<|AUDIO|>")

    model = gpu_check.build_model(config, torch.device("meta"), torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    # Qwen2-Audio-7B-Instruct: 8.397 B parameters (0.637 B audio tower, 7.755 B LM + head)
    assert n == 8_397_094_912
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.get_input_embeddings().weight.shape == (156032, 4096)


def test_committed_sample_loads_in_full_granularity() -> None:
    records, inputs, examples = gpu_check.load_sample(DATA_SAMPLE, 2)
    assert len(records) == len(inputs) == len(examples) == 2
    for rec, item in zip(records, inputs, strict=True):
        n_phones = sum(len(w["phones"]) for w in rec["words"])
        # full granularity: 5 sentence scores, 3 per word, 1 per phone
        assert len(item.template.slots) == 5 + 3 * len(rec["words"]) + n_phones
        assert item.audio.dtype.name == "float32" and item.audio.size > 16000


def test_percentile_nearest_rank() -> None:
    assert gpu_check.pct([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert gpu_check.pct([float(i) for i in range(1, 21)], 95) == 19.0
