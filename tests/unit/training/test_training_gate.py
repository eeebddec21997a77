"""The promotion gate: mean SCC (expected scores) over the headline aspects must beat the
baseline's, with no NaN for the candidate; PCC on request; unknown aspects left out."""

from __future__ import annotations

from training_jobs.registry import gate

HEAD = ["sentence.total", "sentence.accuracy", "word.total"]


def m(scc, pcc=None, reason=None):
    return {"expected": {"scc": scc, "pcc": pcc if pcc is not None else scc, "rmse": 1.0, "n": 10, "reason": reason},
            "argmax": {"scc": scc, "pcc": scc, "rmse": 1.0, "n": 10, "reason": reason}}


def metrics(**values):
    return {k.replace("_", ".", 1): m(v) for k, v in values.items()}


def test_better_candidate_is_promoted() -> None:
    cand = metrics(sentence_total=0.6, sentence_accuracy=0.5, word_total=0.4)
    base = metrics(sentence_total=0.5, sentence_accuracy=0.5, word_total=0.4)
    d = gate(cand, base, HEAD)
    assert d.promote and d.candidate_mean > d.baseline_mean and d.aspects == HEAD


def test_worse_or_equal_candidate_is_not_promoted() -> None:
    cand = metrics(sentence_total=0.6, sentence_accuracy=0.2, word_total=0.4)
    base = metrics(sentence_total=0.5, sentence_accuracy=0.5, word_total=0.4)
    assert not gate(cand, base, HEAD).promote
    assert not gate(base, base, HEAD).promote  # a tie keeps the active adapter


def test_candidate_nan_blocks_promotion_with_the_reason() -> None:
    cand = metrics(sentence_total=0.9, sentence_accuracy=0.9)
    cand["word.total"] = m(None, reason="predictions are constant (all 7)")
    d = gate(cand, metrics(sentence_total=0.1, sentence_accuracy=0.1, word_total=0.1), HEAD)
    assert not d.promote and "word.total" in d.reason and "constant" in d.reason


def test_baseline_nan_counts_as_no_correlation() -> None:
    cand = metrics(sentence_total=0.1, sentence_accuracy=0.1, word_total=0.1)
    base = {a: m(None, reason="predictions are constant (all 5)") for a in HEAD}
    assert gate(cand, base, HEAD).promote


def test_pcc_metric_and_aspects_outside_the_mode() -> None:
    cand = {"sentence.fluency": m(0.1, pcc=0.9)}
    base = {"sentence.fluency": m(0.5, pcc=0.2)}
    assert not gate(cand, base, ["sentence.fluency", "word.total"], "scc").promote
    d = gate(cand, base, ["sentence.fluency", "word.total"], "pcc")
    assert d.promote and d.aspects == ["sentence.fluency"]
    assert not gate(cand, base, ["word.total"]).promote  # nothing comparable: never automatic


def test_aspects_with_constant_gold_are_left_out() -> None:
    """Constant held-out gold is unmeasurable for any model (the paper's completeness): it does not
    block promotion, unlike a candidate whose own predictions are constant."""
    cand = metrics(sentence_total=0.5, word_total=0.5)
    cand["sentence.accuracy"] = m(None, reason="gold scores are constant (all 8)")
    cand["sentence.accuracy"]["expected"]["gold_varies"] = False
    base = metrics(sentence_total=0.2, word_total=0.2)
    base["sentence.accuracy"] = cand["sentence.accuracy"]
    d = gate(cand, base, HEAD)
    assert d.promote and d.aspects == ["sentence.total", "word.total"]
    only_constant = {"sentence.accuracy": cand["sentence.accuracy"]}
    assert not gate(only_constant, base, ["sentence.accuracy"]).promote


def test_a_held_out_set_below_the_minimum_never_promotes() -> None:
    cand = metrics(sentence_total=0.9, sentence_accuracy=0.9, word_total=0.9)
    base = metrics(sentence_total=0.1, sentence_accuracy=0.1, word_total=0.1)
    d = gate(cand, base, HEAD, n_heldout=1, min_heldout=20)
    assert not d.promote
    assert "held-out set too small to decide: 1 utterance(s), fewer than min_heldout=20" in d.reason
    assert gate(cand, base, HEAD, n_heldout=20, min_heldout=20).promote
