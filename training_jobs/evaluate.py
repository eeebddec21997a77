"""Held-out evaluation: PCC, SCC and RMSE per aspect and granularity, through the serving runtime.

Predictions come from `ScoringModel.score` (batched, template-constrained decoding: the exact
serving path), for the candidate adapter and for the baseline it must beat (the active adapter,
or the base model when none is active), on the same held-out utterances and in the same process.

Each aspect is scored twice:
- `expected`: the expected value under the model's distribution over the allowed values. It is
  continuous, so it breaks the ties of integer scores that otherwise drag SCC down; the gate uses it;
- `argmax`: the integer the text shows (what the paper's numbers measure), at no extra cost.

Gold values are the UNROUNDED expert scores. Sentence aspects pair once per utterance, word aspects
once per word, phone accuracy once per phone; phone metrics are on speechocean762's 0..2 scale
(predictions / 5), so RMSE is comparable with the paper's and GOPT's. A constant aspect
(completeness, typically) gets NaN correlations with the reason, never an exception.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pronunciation.assess import AssessmentRequest, scoring_input
from pronunciation.metrics import Metric, evaluate
from pronunciation.schema import Granularity
from pronunciation.template import SlotName
from training_jobs.dataset import Example, gold_values

log = logging.getLogger(__name__)

PHONE_SCALE = 5.0  # model phone scores are 0..10, annotations 0..2


def aspect_of(slot: SlotName) -> str:
    """"sentence.fluency" -> itself; "word[3].stress" -> "word.stress"; phones -> "phone.accuracy"."""
    if not isinstance(slot, SlotName):
        raise ValueError(f"{slot!r} is not a template's slot name")
    return slot.metric


def metric_json(m: Metric) -> dict[str, Any]:
    """A Metric as JSON Postgres accepts (NaN -> null; `reason` says why)."""
    def num(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round(float(x), 6)

    return {"pcc": num(m.pcc), "scc": num(m.scc), "rmse": num(m.rmse), "n": m.n, "reason": m.reason}


def predict(scoring_model, examples: Sequence[Example], granularity: Granularity, batch_size: int = 8):
    """Slot values (argmax, expected) per example, with whatever adapter is active on the model."""
    inputs = [scoring_input(AssessmentRequest(e.audio, e.reference, Granularity(granularity))) for e in examples]
    return [out.values for out in scoring_model.score(inputs, batch_size=batch_size)]


def compute_metrics(predictions: Sequence[dict[str, tuple[int, float]]], examples: Sequence[Example],
                    granularity: Granularity) -> dict[str, dict[str, dict[str, Any]]]:
    """{aspect: {"expected": metric, "argmax": metric}} over all examples.

    `gold_varies` says whether the held-out gold can rank anything at all: when it is constant
    (or n < 2) no model can be measured on the aspect, which the promotion gate must tell apart
    from a candidate whose own predictions are constant.
    """
    pairs: dict[str, dict[str, list[float]]] = {}
    for values, example in zip(predictions, examples, strict=True):
        gold = gold_values(example.annotation, granularity)
        for slot, g in gold.items():
            argmax, expected = values[slot]
            scale = PHONE_SCALE if slot.level == "phone" else 1.0
            p = pairs.setdefault(aspect_of(slot), {"gold": [], "expected": [], "argmax": []})
            p["gold"].append(g)
            p["expected"].append(expected / scale)
            p["argmax"].append(argmax / scale)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for aspect, p in sorted(pairs.items()):
        gold_varies = len(p["gold"]) >= 2 and max(p["gold"]) > min(p["gold"])
        out[aspect] = {kind: {**metric_json(evaluate(p[kind], p["gold"])), "gold_varies": gold_varies}
                       for kind in ("expected", "argmax")}
    return out


def evaluate_adapters(
    base_model,
    processor,
    *,
    model_path: str,
    examples: Sequence[Example],
    granularity: Granularity,
    adapters: dict[str, Path | None],
    batch_size: int = 8,
) -> dict[str, dict]:
    """Metrics for each labelled adapter folder (None = the base model) on the same examples.

    `base_model` is a plain Qwen2AudioForConditionalGeneration already in memory (the training
    model with its LoRA layers removed), so evaluating costs no second load of the weights.
    """
    from pronunciation.runtime import ScoringModel
    from pronunciation.tiny_model import is_tiny_model

    base_model.eval()
    base_model.config.use_cache = True
    runtime = ScoringModel(base_model, processor, model_path=model_path, model_is_tiny=is_tiny_model(model_path),
                           max_batch_size=batch_size)
    results: dict[str, dict] = {}
    for label, folder in adapters.items():
        if folder is None:
            runtime.activate(None)
        else:
            if label not in runtime.adapter_versions:
                runtime.load_adapter(str(folder), label)
            runtime.activate(label)
        preds = predict(runtime, examples, granularity, batch_size)
        results[label] = compute_metrics(preds, examples, granularity)
        log.info("evaluated %s on %d held-out utterances", label, len(examples))
    return results
