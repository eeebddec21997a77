"""Metrics per aspect and granularity from slot predictions: word and phone slots pool across
utterances, phones on the 0..2 scale, NaN with the reason for a constant aspect."""

from __future__ import annotations

import numpy as np
import pytest

from pronunciation.schema import Granularity
from tests.training_support import pick_clips, so_entry
from training_jobs.annotations import check_item
from training_jobs.dataset import Example, gold_values
from pronunciation.output_format import phone_slot, sentence_slot, word_slot
from training_jobs.evaluate import aspect_of, compute_metrics


def test_aspect_of() -> None:
    assert aspect_of(sentence_slot("prosody")) == "sentence.prosody"
    assert aspect_of(word_slot(12, "stress")) == "word.stress"
    assert aspect_of(phone_slot(0, 3)) == "phone.accuracy"
    assert (str(word_slot(12, "stress")), str(phone_slot(0, 3))) == ("word[12].stress", "word[0].phone[3].accuracy")
    with pytest.raises(ValueError):  # a bare string is not a slot: nothing parses names back
        aspect_of("word[0].phone[3].accuracy")


def test_compute_metrics_pools_and_scales() -> None:
    rows = pick_clips(4, 4)
    examples = []
    for i, row in enumerate(rows):
        ann, problems = check_item(row["utt_id"], so_entry(row, fluency=2 + 2 * i, phone_score=0.4 * i))
        assert not problems
        examples.append(Example(row["utt_id"], "b", ann.speaker, np.zeros(1, np.float32), ann))
    preds = []
    for ex in examples:
        gold = gold_values(ex.annotation, Granularity.FULL)
        # a perfect model: expected = gold (phones x5 on the model's scale), argmax = rounded
        preds.append({s: (int(round(g * (5 if ".phone[" in s else 1))), g * (5 if ".phone[" in s else 1))
                      for s, g in gold.items()})
    m = compute_metrics(preds, examples, Granularity.FULL)
    assert set(m) == {"sentence.accuracy", "sentence.fluency", "sentence.prosody", "sentence.completeness",
                      "sentence.total", "word.accuracy", "word.stress", "word.total", "phone.accuracy"}
    assert m["sentence.fluency"]["expected"]["scc"] == pytest.approx(1.0)
    assert m["sentence.fluency"]["expected"]["n"] == 4
    assert m["phone.accuracy"]["expected"]["pcc"] == pytest.approx(1.0)
    assert m["phone.accuracy"]["expected"]["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert m["phone.accuracy"]["expected"]["n"] == sum(len(w.phones) for e in examples for w in e.annotation.words)
    c = m["sentence.completeness"]["expected"]
    assert c["pcc"] is None and c["scc"] is None and "constant" in c["reason"] and c["gold_varies"] is False
    assert m["sentence.fluency"]["expected"]["gold_varies"] is True
