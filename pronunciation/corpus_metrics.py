"""Metrics between two score files in speechocean762's scores.json format: the experts' and an
engine's predictions (expected values as floats), at phone, word and sentence level.

Both `apa-fleet evaluate` and the head's training script compute their figures here, so a
recorded metric and a re-computed one agree by construction. Utterances or words whose structure
differs between the files (another phone count) are left out of that level and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from pronunciation.metrics import Metric, evaluate

SENTENCE_KEYS: tuple[str, ...] = ("accuracy", "completeness", "fluency", "prosodic", "total")
WORD_KEYS: tuple[str, ...] = ("accuracy", "stress", "total")

ROWS: tuple[tuple[str, str, str], ...] = (
    ("phone", "accuracy", "phone accuracy"),
    ("word", "accuracy", "word accuracy"),
    ("word", "stress", "word stress"),
    ("word", "total", "word total"),
    ("sentence", "accuracy", "sentence accuracy"),
    ("sentence", "completeness", "completeness"),
    ("sentence", "fluency", "fluency"),
    ("sentence", "prosodic", "prosody"),
    ("sentence", "total", "sentence total"),
)
"""(level, key, label) for every reported aspect, in the paper's order."""


@dataclass(frozen=True)
class CorpusMetrics:
    metrics: dict[str, Metric]  # label -> metric
    utterances: int
    skipped_words: int
    skipped_phones: int


def pairs(gold: dict, pred: dict) -> tuple[dict[str, tuple[list[float], list[float]]], int, int]:
    """label -> (predicted, gold) lists over the utterances both files hold."""
    out: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for _, _, label in ROWS}
    skipped_words = skipped_phones = 0
    for utt, g in gold.items():
        p = pred.get(utt)
        if p is None:
            continue
        for level, key, label in ROWS:
            if level == "sentence" and key in g and p.get(key) is not None:
                out[label][0].append(float(p[key]))
                out[label][1].append(float(g[key]))
        gw, pw = g.get("words", []), p.get("words", [])
        if len(gw) != len(pw):
            skipped_words += len(gw)
            continue
        for a, b in zip(gw, pw, strict=True):
            for key in WORD_KEYS:
                if key in a and b.get(key) is not None:
                    out[f"word {key}"][0].append(float(b[key]))
                    out[f"word {key}"][1].append(float(a[key]))
            ga, pa = a.get("phones-accuracy", []), b.get("phones-accuracy") or []
            if len(ga) != len(pa):
                skipped_phones += len(ga)
                continue
            out["phone accuracy"][0].extend(float(x) for x in pa)
            out["phone accuracy"][1].extend(float(x) for x in ga)
    return out, skipped_words, skipped_phones


def corpus_metrics(gold: dict, pred: dict) -> CorpusMetrics:
    """PCC, SCC and RMSE for every aspect of ROWS (NaN with a reason where undefined)."""
    data, sw, sp = pairs(gold, pred)
    metrics = {label: evaluate(*data[label]) for _, _, label in ROWS if data[label][0]}
    return CorpusMetrics(metrics, sum(1 for u in gold if u in pred), sw, sp)
