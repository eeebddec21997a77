"""The tiny offline Qwen2-Audio: built once, marked as meaningless, loaded like the real weights."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from pronunciation.runtime import ScoringInput
from pronunciation.template import Literal, Slot, Template
from pronunciation.tiny_model import QWEN2_PRETOKENIZE_REGEX, SPECIAL_TOKENS, TINY_MARKER, build_tiny_model


def test_build_is_idempotent_and_marked(tiny_model_path):
    info = json.loads((tiny_model_path / TINY_MARKER).read_text())
    assert info["seed"] == 0 and "mean nothing" in info["warning"].lower()
    weights = tiny_model_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_model(tiny_model_path, seed=0) == tiny_model_path
    assert weights.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError):
        build_tiny_model(tiny_model_path, seed=1)


def test_tokenizer_behaves_like_qwen2(processor):
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert QWEN2_PRETOKENIZE_REGEX == PRETOKENIZE_REGEX
    tok = processor.tokenizer
    for special in SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    ids = tok("Sentence Scores: 10 9", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[-4:] == ["1", "0", "Ġ", "9"]  # digits one by one, like Qwen2
    for text in ["Word Scores: MARK/10/5/7 IS/3/10/4", "EH1 L IH0 - T UW0", "héllo wörld\n\n  x", "<|im_start|>user\nhi<|im_end|>"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert processor.feature_extractor.feature_size == 128
    assert 1000 <= len(tok) <= 4000


def test_load_through_the_same_path_as_real_weights(tiny_model_path, tmp_path, caplog, load_scoring_model):
    with caplog.at_level(logging.WARNING, logger="pronunciation.runtime"):
        sm = load_scoring_model()
    assert sm.model_is_tiny
    assert any("MEAN NOTHING" in r.getMessage() for r in caplog.records)
    assert not sm.model.training and sm.model.dtype == torch.float32 and sm.device.type == "cpu"
    cfg = sm.model.config
    assert cfg.audio_config.num_mel_bins == 128 and cfg.audio_config.max_source_positions == 1500
    assert cfg.audio_token_id == sm.processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")

    template = Template((Literal("Sentence Scores: "), Slot("acc"), Literal(" "), Slot("tot")))
    item = ScoringInput(np.zeros(8000, np.float32), "Evaluate.", "Reference text: MARK.", template)
    [out] = sm.score([item])
    assert out.model_is_tiny and out.adapter_version is None

    # the same folder without the marker is treated as a real model (no tiny flag), same answers
    copy = tmp_path / "unmarked"
    shutil.copytree(tiny_model_path, copy)
    (copy / TINY_MARKER).unlink()
    from pronunciation.runtime import ScoringModel

    other = ScoringModel.load(copy, device="cpu")
    [out2] = other.score([item])
    assert not other.model_is_tiny and not out2.model_is_tiny
    assert out2.values == out.values and out2.text == out.text


def test_bf16_and_empty_batch(load_scoring_model):
    sm = load_scoring_model(dtype="bfloat16")  # the CUDA dtype; runs on CPU too
    assert sm.model.dtype == torch.bfloat16
    assert sm.score([]) == []
    template = Template((Literal("S: "), Slot("a"), Literal(" "), Slot("b", (5, 10))))
    items = [ScoringInput(np.full(4000 * (i + 1), 0.01 * i, np.float32), "Evaluate.", f"r{i}", template) for i in range(2)]
    for out in sm.score(items):
        assert out.values["a"][0] in range(11) and out.values["b"][0] in (5, 10)
        assert 0 <= out.values["a"][1] <= 10 and 5 <= out.values["b"][1] <= 10
