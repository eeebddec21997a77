"""Expert labels (speechocean762's scores.json format) as arrays aligned with the head's rows."""

from __future__ import annotations

import numpy as np

WORD_TARGETS: tuple[str, ...] = ("accuracy", "stress", "total")
SENTENCE_TARGETS: tuple[str, ...] = ("accuracy", "fluency", "prosodic", "completeness", "total")


def phone_targets(labels: dict) -> np.ndarray:
    """Phone accuracies (0..2) in reference order."""
    return np.array([a for w in labels["words"] for a in w["phones-accuracy"]], np.float32)


def word_targets(labels: dict) -> np.ndarray:
    """(W, 3): accuracy, stress, total per word (0..10)."""
    return np.array([[w[k] for k in WORD_TARGETS] for w in labels["words"]], np.float32)


def sentence_targets(labels: dict) -> np.ndarray:
    """(5,): accuracy, fluency, prosodic, completeness, total (0..10)."""
    return np.array([labels[k] for k in SENTENCE_TARGETS], np.float32)
