"""(b) SimPO+CE equals a hand computation; simulated negatives move one score by 2..4 (stress
flips) and keep word/sentence totals consistent by the documented rule."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pronunciation.lexicon import build_reference
from pronunciation.output_format import build_template
from pronunciation.schema import Granularity
from training_jobs.simpo import (
    average_logprobs,
    round_away,
    simpo_ce_loss,
    simpo_loss,
    simulate_negative,
)


def test_simpo_loss_matches_hand_computation() -> None:
    chosen = torch.tensor([-0.20, -1.50, -0.70])
    rejected = torch.tensor([-0.90, -1.00, -0.70])
    beta, gamma, lam = 0.1, 0.5, 0.1
    by_hand = []
    for c, r in zip(chosen.tolist(), rejected.tolist()):
        z = beta * (c - r) - gamma
        simpo = math.log(1 + math.exp(-z))  # -log sigmoid(z)
        by_hand.append(simpo + lam * (-c))  # + lambda * CE(y+), CE = -average log-prob
    got = simpo_ce_loss(chosen, rejected, beta=beta, gamma=gamma, lam=lam)
    assert got.item() == pytest.approx(sum(by_hand) / 3, abs=1e-6)
    # first pair alone: z = 0.1 * 0.7 - 0.5 = -0.43
    assert simpo_loss(chosen[:1], rejected[:1]).item() == pytest.approx(math.log(1 + math.exp(0.43)), abs=1e-6)


def test_average_logprobs_counts_answer_tokens_only() -> None:
    """Known next-token distributions: r(y) = mean of log p over labelled tokens, prompt/pad ignored."""
    vocab = 4
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.125, 0.125], [0.7, 0.1, 0.1, 0.1], [0.25] * 4])
    logits = torch.log(probs)[None]  # (1, L=4, V)
    labels = torch.tensor([[-100, 3, 0, -100]])  # token 1 = 3 (pred by pos 0), token 2 = 0 (pred by pos 1)
    r = average_logprobs(logits, labels)
    assert r.item() == pytest.approx((math.log(0.4) + math.log(0.5)) / 2, abs=1e-6)
    assert logits.shape[-1] == vocab


def test_loss_prefers_the_positive() -> None:
    better = simpo_ce_loss(torch.tensor([-0.1]), torch.tensor([-3.0]))
    worse = simpo_ce_loss(torch.tensor([-3.0]), torch.tensor([-0.1]))
    assert better < worse


# -- simulated pairs -------------------------------------------------------------------------

WORDS = [("MARK", ["M", "AA0", "R", "K"]), ("IS", ["IH0", "Z"]), ("GOING", ["G", "OW0", "IH0", "NG"])]


def _positive(rng, mode: Granularity) -> dict[str, int]:
    ref = build_reference(" ".join(w for w, _ in WORDS), [p for _, p in WORDS])
    return {s.name: int(rng.choice(s.values)) for s in build_template(ref, mode).slots}


def _word(slot: str) -> int | None:
    m = re.match(r"^word\[(\d+)\]", slot)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("mode", [Granularity.FULL, Granularity.SENTENCE_WORD, Granularity.SENTENCE,
                                  Granularity.WORD_ACCURACY, Granularity.SENTENCE_FLUENCY])
def test_negatives_are_consistent(mode) -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for trial in range(400):
        pos = _positive(rng, mode)
        neg, pert = simulate_negative(pos, np.random.default_rng(trial))
        assert set(neg) == set(pos) and all(0 <= v <= 10 for v in neg.values())
        changed = {s for s in pos if neg[s] != pos[s]}
        assert pert.slot in changed and neg[pert.slot] == pert.new and pos[pert.slot] == pert.old
        d = pert.new - pert.old
        expected = {pert.slot: pert.new}
        slot = pert.slot

        def move(s, delta):  # the documented rule: clip, pass on the change actually applied
            if s not in pos or delta == 0:
                return 0
            new = max(0, min(10, pos[s] + delta))
            expected[s] = new
            return new - pos[s]

        if slot.endswith(".stress"):
            aspect = "word.stress"
            assert {pert.old, pert.new} == {5, 10}
            move(f"word[{_word(slot)}].total", round_away(d / 2))
        elif ".phone[" in slot:
            aspect = "phone"
            assert 2 <= abs(d) <= 4
            i = _word(slot)
            n_ph = sum(1 for s in pos if s.startswith(f"word[{i}].phone["))
            n_w = len({_word(s) for s in pos if _word(s) is not None})
            wc = move(f"word[{i}].accuracy", round_away(d / n_ph))
            move(f"word[{i}].total", round_away(wc / 2))
            sc = move("sentence.accuracy", round_away(wc / n_w))
            move("sentence.total", round_away(sc / 3))
        elif slot.startswith("word["):
            aspect = "word." + slot.rsplit(".", 1)[1]
            assert 2 <= abs(d) <= 4
            if aspect == "word.accuracy":
                move(f"word[{_word(slot)}].total", round_away(d / 2))
        else:
            aspect = slot
            assert 2 <= abs(d) <= 4
            if slot in ("sentence.accuracy", "sentence.fluency", "sentence.prosody"):
                move("sentence.total", round_away(d / 3))
        seen.add(aspect)
        assert {s: neg[s] for s in changed} == {s: v for s, v in expected.items() if v != pos[s]}, (pos, neg, pert)
    # every aspect the mode has gets perturbed sometimes
    mode_aspects = {s if s.startswith("sentence.") else ("phone" if ".phone[" in s else "word." + s.rsplit(".", 1)[1])
                    for s in _positive(rng, mode)}
    assert seen == mode_aspects


def test_round_away() -> None:
    assert [round_away(x) for x in (0.5, -0.5, 1.49, -2.5, 0.0, 2.0 / 3)] == [1, -1, 1, -3, 0, 1]
