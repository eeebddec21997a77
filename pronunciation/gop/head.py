"""The trained head: UtteranceFeatures -> continuous scores on the corpus's scales, and those
scores -> the project's `Assessment` (expected = the continuous score, value = it rounded to
an allowed value).

The head is the average of the boosting stack and the GOPT-style transformers (when shipped);
both halves see the same features. It is stored as one lzma-compressed pickle of plain numpy
arrays and scikit-learn estimators beside a JSON of the data, settings and metrics that made it
(`weights/head.pkl.xz`, `weights/head.json`); `scripts/train_gop_head.py` rebuilds both.
"""

from __future__ import annotations

import json
import lzma
import math
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pronunciation.gop.boosting import BoostingStack
from pronunciation.gop.features import UtteranceFeatures
from pronunciation.gop.transformer import forward, token_inputs, word_scores
from pronunciation.lexicon import Reference
from pronunciation.schema import MODE_FIELDS, Granularity

WEIGHTS_DIR = Path(__file__).parent / "weights"
HEAD_FILE = "head.pkl.xz"
META_FILE = "head.json"
ASPECT_OF_TARGET = {"accuracy": "accuracy", "fluency": "fluency", "prosodic": "prosody",
                    "completeness": "completeness", "total": "total"}


@dataclass(frozen=True)
class HeadScores:
    phone: np.ndarray  # (P,) accuracy on 0..2
    word: np.ndarray  # (W, 3) accuracy, stress, total on 0..10
    sentence: dict[str, float]  # accuracy, fluency, prosodic, completeness, total on 0..10


SPOKEN_WORD_ACCURACY = 5.0


def completeness(word_accuracy: np.ndarray) -> float:
    """10 x the share of reference words spoken, a word counting in proportion to its predicted
    accuracy up to SPOKEN_WORD_ACCURACY.

    The corpus defines completeness as the share of words pronounced, and its labels are almost
    all 10 (no learnable signal: the paper reports NaN), so a learned model predicts a constant;
    this rule instead drops when a word is missing, which is what a teacher needs to see.
    """
    return float(10.0 * np.minimum(1.0, word_accuracy / SPOKEN_WORD_ACCURACY).mean())


@dataclass
class GopHead:
    boosting: BoostingStack | None
    transformers: list[dict[str, np.ndarray]] = field(default_factory=list)
    stats: np.ndarray | None = None  # per-phone z-score statistics (the transformer's input)
    metadata: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unversioned"))

    def predict(self, f: UtteranceFeatures) -> HeadScores:
        parts = []
        if self.boosting is not None:
            parts.append(self.boosting.predict(f))
        if self.transformers:
            stats = self.stats if self.stats is not None else self.boosting.stats
            tok, ids, utt = token_inputs(f, stats)
            outs = [forward(w, tok, ids, utt) for w in self.transformers]
            p = np.mean([o[0] for o in outs], 0)
            wt = word_scores(np.mean([o[1] for o in outs], 0), f.word_of_phone) * 5
            s = np.mean([o[2] for o in outs], 0) * 5
            parts.append((p, wt, s))
        if not parts:
            raise ValueError("the head has neither a boosting stack nor a transformer")
        p = np.mean([x[0] for x in parts], 0)
        w = np.mean([x[1] for x in parts], 0)
        s = np.mean([x[2] for x in parts], 0)
        from pronunciation.gop.targets import SENTENCE_TARGETS

        w = np.clip(w, 0, 10)
        sentence = {k: float(np.clip(v, 0, 10)) for k, v in zip(SENTENCE_TARGETS, s, strict=True)}
        sentence["completeness"] = completeness(w[:, 0])
        return HeadScores(np.clip(p, 0, 2), w, sentence)

    # -- storage ----------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        blob = {"boosting": self.boosting, "transformers": self.transformers, "stats": self.stats}
        with lzma.open(folder / HEAD_FILE, "wb", preset=6) as fh:
            pickle.dump(blob, fh, protocol=pickle.HIGHEST_PROTOCOL)
        (folder / META_FILE).write_text(json.dumps(self.metadata, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path = WEIGHTS_DIR) -> GopHead:
        # The pickle is the project's own artefact (shipped in the package or built by its training
        # job into the registry), never user input.
        with lzma.open(folder / HEAD_FILE, "rb") as fh:
            blob = pickle.load(fh)
        meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).exists() else {}
        return cls(blob["boosting"], blob["transformers"], blob["stats"], meta)


@lru_cache(maxsize=4)
def shipped_head(folder: str | None = None) -> GopHead:
    """The head shipped in the package (or in `folder`), loaded once per process."""
    return GopHead.load(Path(folder) if folder else WEIGHTS_DIR)


# -- scores -> slot values ---------------------------------------------------------------------------


def _score(x: float, lo: float = 0.0, hi: float = 10.0) -> tuple[int, float]:
    e = float(min(hi, max(lo, x)))
    return int(min(hi, max(lo, math.floor(e + 0.5)))), e


def _stress(x: float) -> tuple[int, float]:
    e = float(min(10.0, max(5.0, x)))
    return (10 if e >= 7.5 else 5), e


def slot_values(scores: HeadScores, reference: Reference, granularity: Granularity) -> dict[str, tuple[int, float]]:
    """(value, expected) per template slot of `granularity` (see output_format's slot names)."""
    from pronunciation.output_format import phone_slot, sentence_slot, word_slot

    fields = MODE_FIELDS[granularity]
    out: dict[str, tuple[int, float]] = {}
    for target, aspect in ASPECT_OF_TARGET.items():
        if aspect in fields.sentence:
            out[sentence_slot(aspect)] = _score(scores.sentence[target])
    k = 0
    for i, word in enumerate(reference.words):
        for c, aspect in enumerate(("accuracy", "stress", "total")):
            if aspect in fields.word:
                out[word_slot(i, aspect)] = (_stress if aspect == "stress" else _score)(scores.word[i, c])
        for j in range(len(word.phones)):
            if fields.phones:
                out[phone_slot(i, j)] = _score(float(scores.phone[k]) * 5)
            k += 1
    return out

