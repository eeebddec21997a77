"""Job params override the training defaults; typos and bad values fail when the job is created."""

from __future__ import annotations

import pytest

from pronunciation.schema import Granularity
from training_jobs.config import ParamsError, TrainingDefaults, resolve_params


def test_paper_defaults() -> None:
    p = resolve_params(TrainingDefaults(), {})
    assert (p.lr, p.epochs, p.grad_accum, p.warmup_ratio) == (1e-4, 3, 8, 0.1)
    assert (p.simpo_beta, p.simpo_gamma, p.simpo_lambda) == (0.1, 0.5, 0.1)
    assert p.granularity == Granularity.FULL and p.heldout_fraction == 0.2 and not p.simpo


def test_params_override_defaults() -> None:
    p = resolve_params(TrainingDefaults(epochs=5), {"lr": 3e-3, "granularity": "sentence_fluency",
                                                    "headline_aspects": ["sentence.fluency"], "simpo": True})
    assert (p.epochs, p.lr, p.granularity, p.simpo) == (5, 3e-3, Granularity.SENTENCE_FLUENCY, True)


@pytest.mark.parametrize(("params", "needle"), [
    ({"epoch": 3}, "unknown training params ['epoch']"),
    ({"lr": 0}, "lr"),
    ({"headline_aspects": ["sentence.speed"]}, "sentence.speed"),
    ({"granularity": "phones"}, "granularity"),
    ({"heldout_fraction": 1.0}, "heldout_fraction"),
])
def test_bad_params_are_refused(params, needle) -> None:
    with pytest.raises(ParamsError, match=None) as exc:
        resolve_params(TrainingDefaults(), params)
    assert needle in str(exc.value)


def test_environment_prefix(monkeypatch) -> None:
    monkeypatch.setenv("APA_TRAIN_EPOCHS", "7")
    monkeypatch.setenv("APA_TRAIN_BATCH_POLICY", "reject")
    monkeypatch.setenv("APA_TRAIN_HEADLINE_ASPECTS", '["sentence.total"]')
    d = TrainingDefaults()
    assert (d.epochs, d.batch_policy, d.headline_aspects) == (7, "reject", ["sentence.total"])
