"""Batches that fill (issue 10): batched preprocessing, a trimmed audio window, finished items
leaving the batch and slot-count buckets give the same decoding results as one item at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pronunciation.decoding import ConstrainedDecoder
from pronunciation.prompt_inputs import (
    FULL_WINDOW_FRAMES,
    encode_audio_window,
    prepare_prompt,
    prepare_prompts,
    window_frames,
)


def _same_results(a, b, tol: float = 1e-4) -> None:
    assert a.text == b.text
    assert {k: v for k, (v, _) in a.values.items()} == {k: v for k, (v, _) in b.values.items()}
    for k in a.values:
        assert a.values[k][1] == pytest.approx(b.values[k][1], abs=tol)


def test_prepare_prompts_equals_prepare_prompt(processor, h):
    rng = np.random.default_rng(2)
    audios = [h.make_audio(rng, s) for s in (0.4, 3.3, 1.7, 5.0)]
    requests = [h.random_request(rng) for _ in audios]
    instructions = [h.INSTRUCTIONS, h.INSTRUCTIONS, "Other.", h.INSTRUCTIONS]
    batched = prepare_prompts(processor, audios, instructions, requests)
    for p, a, i, r in zip(batched, audios, instructions, requests):
        one = prepare_prompt(processor, a, i, r)
        assert p.prefix_ids == one.prefix_ids and p.suffix_ids == one.suffix_ids
        assert torch.equal(p.feature_attention_mask, one.feature_attention_mask)
        torch.testing.assert_close(p.input_features, one.input_features, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="30 s"):
        prepare_prompts(processor, [np.zeros(16000 * 31, np.float32)], ["i"], ["r"])


def test_window_frames_cover_every_clip_plus_two_frames():
    assert window_frames([16000 * 30], trim=True) == FULL_WINDOW_FRAMES
    assert window_frames([100], trim=False) == FULL_WINDOW_FRAMES
    for n in (1, 159, 160, 161, 16000, 56000, 16000 * 29 + 150):
        w = window_frames([n, 800], trim=True)
        assert w % 100 == 0 and -(-n // 160) + 2 <= w <= FULL_WINDOW_FRAMES


def test_trimmed_window_features_equal_the_full_windows_real_frames(processor, h):
    rng = np.random.default_rng(3)
    audios = [h.make_audio(rng, s) for s in (0.5, 2.2, 3.9)]
    full = prepare_prompts(processor, audios, [h.INSTRUCTIONS] * 3, ["r"] * 3)
    trim = prepare_prompts(processor, audios, [h.INSTRUCTIONS] * 3, ["r"] * 3, trim_window=True)
    assert trim[0].input_features.shape[-1] == 400 < FULL_WINDOW_FRAMES  # 390 frames + 2, whole seconds
    for f, t in zip(full, trim):
        assert f.suffix_ids == t.suffix_ids  # same number of audio tokens
        n = int(t.feature_attention_mask.sum())
        assert n == int(f.feature_attention_mask.sum())
        torch.testing.assert_close(t.input_features[:, : n + 2], f.input_features[:, : n + 2], atol=1e-5, rtol=1e-5)


def test_own_encoder_path_at_full_window_equals_the_stock_model(random_model, processor, h):
    model = random_model(11)
    rng = np.random.default_rng(4)
    prompts = prepare_prompts(processor, [h.make_audio(rng, 1.2), h.make_audio(rng, 2.9)], [h.INSTRUCTIONS] * 2,
                              ["r", "r"])
    p = prompts[1]
    ids = torch.tensor([p.suffix_ids])
    feats, fmask = p.input_features[None], p.feature_attention_mask[None]
    with torch.inference_mode():
        stock = model.model(input_ids=ids, input_features=feats, feature_attention_mask=fmask).last_hidden_state
        ours = model.model(inputs_embeds=encode_audio_window(model.model, ids, feats, fmask)).last_hidden_state
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)


def test_trimmed_window_decodes_like_the_full_window(random_model, processor, h):
    rng = np.random.default_rng(6)
    model = random_model(12)
    audios = [h.make_audio(rng, s) for s in (0.4, 3.7, 1.5, 2.2)]
    requests = [h.random_request(rng) for _ in audios]
    templates = [h.full_template(["MARK", "IS"]), h.full_template(["ELEPHANT"]),
                 h.random_template(rng, max_slots=3), h.full_template(["TO"])]
    dec = ConstrainedDecoder(model, processor)
    full = dec.decode(prepare_prompts(processor, audios, [h.INSTRUCTIONS] * 4, requests), templates)
    trim = dec.decode(prepare_prompts(processor, audios, [h.INSTRUCTIONS] * 4, requests, trim_window=True), templates)
    for a, b in zip(full, trim):
        _same_results(a, b)
    # one item alone gets its own (shorter) window: still the same answer
    [alone] = dec.decode(prepare_prompts(processor, audios[:1], [h.INSTRUCTIONS], requests[:1], trim_window=True),
                         templates[:1])
    _same_results(alone, full[0])


def test_finished_items_leave_the_batch(random_model, processor, h):
    model = random_model(13)
    widths: list[int] = []
    model.model.language_model.register_forward_hook(
        lambda mod, args, kwargs, out: widths.append(int(kwargs["inputs_embeds"].shape[0])), with_kwargs=True)
    rng = np.random.default_rng(8)
    audios = [h.make_audio(rng, 1.0) for _ in range(3)]
    prompts = prepare_prompts(processor, audios, [h.INSTRUCTIONS] * 3, [h.random_request(rng) for _ in audios])
    templates = [h.full_template(["MARK", "IS", "GOING"]), h.full_template(["TO"]), h.full_template(["MARK"])]
    dec = ConstrainedDecoder(model, processor)
    dec.decode(prompts[:1], templates[:1])  # fills the prefix cache
    widths.clear()
    batched = dec.decode(prompts, templates)
    slots = [len(t.slots) for t in templates]
    # one forward per step of the longest template; rows leave as their templates end
    assert len(widths) == max(slots)
    assert widths == [sum(1 for n in slots if n > step) for step in range(max(slots))]
    for b, p, t in zip(batched, prompts, templates):
        _same_results(b, dec.decode([p], [t])[0])


def test_score_buckets_by_slot_count_and_keeps_order(load_scoring_model, h):
    from pronunciation.runtime import ScoringInput

    sm = load_scoring_model()
    calls: list[int] = []
    sm.base_model.model.language_model.register_forward_hook(lambda *a: calls.append(1))
    rng = np.random.default_rng(9)
    long, short = h.full_template(["MARK", "IS", "GOING"]), h.full_template(["TO"])
    inputs = [ScoringInput(h.make_audio(rng, 1.0), h.INSTRUCTIONS, h.random_request(rng), t)
              for t in (long, short, long, short)]
    sm.score(inputs[:1])  # prefix cache
    alone = [sm.score([x])[0] for x in inputs]
    calls.clear()
    together = sm.score(inputs, batch_size=2)
    # buckets {short, short}, {long, long}: len(short) + len(long) forwards, not 2 x len(long)
    assert len(calls) == len(short.slots) + len(long.slots)
    for a, b in zip(together, alone):
        assert a.text == b.text
        for k in a.values:
            assert a.values[k][0] == b.values[k][0]
            assert a.values[k][1] == pytest.approx(b.values[k][1], abs=1e-4)
    # the trimmed window through ScoringModel: same answers
    trimmed = load_scoring_model(trim_audio_window=True).score(inputs, batch_size=4)
    for a, b in zip(trimmed, alone):
        assert a.text == b.text
