"""SimPO + CE on simulated preference pairs (the paper's section 2.2 and 3.2).

Pairs. The positive answer is the expert target; the negative moves ONE target score by 2..4
points up or down (clipped to 0..10; if clipping would leave a change under 2, the other direction
is taken), or flips a word's stress 5 <-> 10. Dependent scores then follow so the negative stays
internally consistent, as the paper asks. The rule (simple, proportional, stated once here):

- a phone of word i changes by d      -> word i accuracy changes by r(d / phones in word i);
                                         that change c then moves word i total by r(c / 2),
                                         sentence accuracy by a = r(c / words), and
                                         sentence total by r(a / 3);
- word i accuracy or stress changes by d -> word i total changes by r(d / 2)
                                            (a word total has two parts: accuracy and stress);
- sentence accuracy, fluency or prosody changes by d -> sentence total changes by r(d / 3);
- completeness and the totals themselves have no dependents.

r() rounds half away from zero; every dependent is clipped to 0..10 and the change passed on is
the change actually applied. A dependent is only touched when the granularity mode has it.

Loss, per pair, with r(y) the AVERAGE log-probability of the answer tokens (eq. 2):

    L = -log sigmoid(beta * (r(y+) - r(y-)) - gamma)  +  lambda * CE(y+)

with CE(y+) = -r(y+), the usual token-mean cross-entropy on the positive (eq. 3). This is the
original SimPO form (Meng et al.) and trl's `CPOTrainer(loss_type="simpo")` (gamma outside beta);
the APA paper's eq. (1) prints beta * (... - gamma), which only rescales gamma (gamma_paper =
gamma / beta). Defaults beta 0.1, gamma 0.5, lambda 0.1.

Why not trl's CPOTrainer: its `concatenated_forward` passes only input_ids and attention_mask to
the model and its `tokenize_row` tokenizes text, so Qwen2-Audio would never see the audio
(input_features / feature_attention_mask) and the answer tokens would not match the constrained
decoder's. The loss is three lines; the pair encoding reuses `encode_training_example`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pronunciation.output_format import sentence_slot, word_slot
from pronunciation.template import SlotName
from pronunciation.training_examples import IGNORE_INDEX
from training_jobs.dataset import Example, target_values
from training_jobs.loop import Stage
from training_jobs.sft import ExampleEncoder

SENTENCE_TOTAL_PARTS = ("accuracy", "fluency", "prosody")


def round_away(x: float) -> int:
    """Round half away from zero: 0.5 -> 1, -0.5 -> -1, 1.4 -> 1."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _clip(v: int) -> int:
    return max(0, min(10, v))


@dataclass(frozen=True)
class Perturbation:
    slot: str  # the target score that moved
    old: int
    new: int


def _move(values: dict[SlotName, int], slot: str, delta: int) -> int:
    """Add delta (clipped) to slot if the mode has it; returns the change applied."""
    if slot not in values or delta == 0:
        return 0
    old = values[slot]
    values[slot] = _clip(old + delta)
    return values[slot] - old


def _propagate_sentence(values: dict[SlotName, int], aspect: str, change: int) -> None:
    if aspect in SENTENCE_TOTAL_PARTS:
        _move(values, sentence_slot("total"), round_away(change / 3))


def _propagate_word(values: dict[SlotName, int], i: int, change: int) -> None:
    _move(values, word_slot(i, "total"), round_away(change / 2))


def n_words(values: dict[SlotName, int]) -> int:
    return len({s.word for s in values if s.word is not None})


def n_phones(values: dict[SlotName, int], i: int) -> int:
    return sum(1 for s in values if s.level == "phone" and s.word == i)


def simulate_negative(values: dict[SlotName, int], rng: np.random.Generator) -> tuple[dict[SlotName, int], Perturbation]:
    """A consistent negative answer for the positive `values` (slot name -> int); see module doc."""
    groups: dict[str, list[str]] = {}
    for slot in sorted(values):
        if slot.level == "sentence":
            groups[slot] = [slot]
        else:
            groups.setdefault(slot.metric, []).append(slot)
    if not groups:
        raise ValueError("no score to perturb")
    aspect = sorted(groups)[int(rng.integers(len(groups)))]
    slot = groups[aspect][int(rng.integers(len(groups[aspect])))]
    neg = dict(values)
    old = values[slot]
    if aspect == "word.stress":
        neg[slot] = 5 if old == 10 else 10
    else:
        step = int(rng.integers(2, 5)) * (1 if rng.random() < 0.5 else -1)
        new = _clip(old + step)
        if abs(new - old) < 2:
            new = _clip(old - step)
        neg[slot] = new
    change = neg[slot] - old

    if aspect.startswith("sentence."):
        _propagate_sentence(neg, aspect.split(".", 1)[1], change)
    elif aspect in ("word.accuracy", "word.stress"):
        _propagate_word(neg, slot.word, change)
    elif aspect == "phone.accuracy":
        i = slot.word
        word_change = _move(neg, word_slot(i, "accuracy"), round_away(change / n_phones(values, i)))
        _propagate_word(neg, i, word_change)
        sentence_change = _move(neg, sentence_slot("accuracy"), round_away(word_change / n_words(values)))
        _propagate_sentence(neg, "accuracy", sentence_change)
    return neg, Perturbation(slot, old, neg[slot])


# -- loss ------------------------------------------------------------------------------------


def average_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """r(y) per sequence: mean log-probability of the labelled (answer) tokens, eq. (2).

    logits (B, L, V) predict the next token; labels (B, L) with IGNORE_INDEX on the prompt/padding.
    """
    logits = logits[:, :-1, :].float()
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def simpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float = 0.1, gamma: float = 0.5) -> torch.Tensor:
    """SimPO, eq. (1): -log sigmoid(beta * (r(y+) - r(y-)) - gamma), per pair."""
    return -F.logsigmoid(beta * (chosen - rejected) - gamma)


def simpo_ce_loss(chosen: torch.Tensor, rejected: torch.Tensor, *, beta: float = 0.1, gamma: float = 0.5,
                  lam: float = 0.1) -> torch.Tensor:
    """Eq. (3): SimPO + lambda * CE on the positive (CE = -r(y+)); mean over pairs."""
    return (simpo_loss(chosen, rejected, beta=beta, gamma=gamma) + lam * (-chosen)).mean()


# -- stage -----------------------------------------------------------------------------------


def make_pairs(examples: Sequence[Example], encoder: ExampleEncoder, seed: int) -> list[tuple[dict[str, int], dict[str, int]]]:
    """One (positive, negative) pair of slot values per example, deterministic in `seed`."""
    pairs = []
    for i, e in enumerate(examples):
        pos = target_values(e.annotation, encoder.granularity)
        neg, _ = simulate_negative(pos, np.random.default_rng([seed, 7919, i]))
        pairs.append((pos, neg))
    return pairs


def simpo_loss_fn(model, encoder: ExampleEncoder, examples: Sequence[Example], device: torch.device, *,
                  beta: float, gamma: float, lam: float, seed: int) -> Callable[[int], torch.Tensor]:
    pairs = make_pairs(examples, encoder, seed)

    def loss(i: int) -> torch.Tensor:
        pos, neg = pairs[i]
        a = encoder.encode(examples[i], pos, key=("sft", i))  # same tokens as the SFT target
        b = encoder.encode(examples[i], neg, key=("neg", i))
        batch = encoder.batch([a, b], device)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        r = average_logprobs(logits, labels)
        return simpo_ce_loss(r[:1], r[1:], beta=beta, gamma=gamma, lam=lam)

    return loss


def simpo_stage(model, encoder: ExampleEncoder, examples: Sequence[Example], device: torch.device, *,
                epochs: int, lr: float, grad_accum: int, warmup_ratio: float, beta: float, gamma: float,
                lam: float, seed: int) -> Stage:
    return Stage(
        name="simpo", n_items=len(examples), epochs=epochs, lr=lr, grad_accum=grad_accum, warmup_ratio=warmup_ratio,
        loss_fn=simpo_loss_fn(model, encoder, examples, device, beta=beta, gamma=gamma, lam=lam, seed=seed),
    )
