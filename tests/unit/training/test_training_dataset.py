"""Targets use the inference format's integer scales; gold keeps the raw expert values; the
held-out split is speaker-disjoint, deterministic, stable as data grows, and never one-sided."""

from __future__ import annotations

import numpy as np
import pytest

from pronunciation.output_format import build_template, render
from pronunciation.schema import Granularity
from tests.training_support import pick_clips, so_entry
from training_jobs.annotations import check_item
from training_jobs.dataset import (
    Example,
    cap_items,
    gold_values,
    round_half_up,
    speaker_hash,
    split_by_speaker,
    target_assessment,
    target_values,
)


@pytest.fixture(scope="module")
def row():
    return pick_clips(1, 1)[0]


def _annotation(row, **kw):
    utt, problems = check_item(row["utt_id"], so_entry(row, **kw))
    assert not problems, problems
    return utt


def test_target_scales_and_rounding(row) -> None:
    ann = _annotation(row, accuracy=7.5, fluency=8.4, prosodic=6.5, completeness=10.0, total=7.0,
                      word_score=4.5, stress=5, phone_score=1.1)
    a = target_assessment(ann, Granularity.FULL)
    assert a.sentence.accuracy.value == 8 and a.sentence.fluency.value == 8 and a.sentence.prosody.value == 7
    assert a.sentence.completeness.value == 10 and a.sentence.total.value == 7
    w = a.words[0]
    assert (w.accuracy.value, w.stress.value, w.total.value) == (5, 5, 5)
    assert {p.accuracy.value for p in w.phones} == {6}  # 1.1 * 5 = 5.5 -> 6 (half up)
    # the target renders through the very template inference forces
    text = render(a, ann.reference)
    assert text.startswith("Sentence Scores: 8 8 7 10 7\nWord Scores: ")
    values = target_values(ann, Granularity.FULL)
    assert set(values) == {s.name for s in build_template(ann.reference, Granularity.FULL).slots}


def test_target_follows_the_granularity_mode(row) -> None:
    ann = _annotation(row, fluency=3)
    assert target_values(ann, Granularity.SENTENCE_FLUENCY) == {"sentence.fluency": 3}
    assert set(target_values(ann, Granularity.SENTENCE_WORD)) == {
        s.name for s in build_template(ann.reference, Granularity.SENTENCE_WORD).slots}


def test_gold_keeps_raw_values(row) -> None:
    ann = _annotation(row, fluency=8.4, phone_score=1.1)
    gold = gold_values(ann, Granularity.FULL)
    assert gold["sentence.fluency"] == 8.4 and gold["word[0].phone[0].accuracy"] == 1.1


def test_round_half_up() -> None:
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 7.49, 10.2, -0.3)] == [1, 2, 3, 7, 10, 0]


def _examples(speakers: list[str], per: int = 3) -> list[Example]:
    return [Example(utt_id=f"{s}{i:05d}", batch_id="b", speaker=s, audio=np.zeros(1, np.float32), annotation=None)
            for s in speakers for i in range(per)]


def test_split_is_speaker_disjoint_and_deterministic() -> None:
    exs = _examples([f"{i:04d}" for i in range(40)])
    a = split_by_speaker(exs, 0.2)
    b = split_by_speaker(list(reversed(exs)), 0.2)
    assert {e.utt_id for e in a.heldout} == {e.utt_id for e in b.heldout}
    assert not ({e.speaker for e in a.train} & a.heldout_speakers)
    assert 0.05 < len(a.heldout_speakers) / 40 < 0.45
    assert all(speaker_hash(s) < 0.2 for s in a.heldout_speakers)


def test_a_speakers_side_does_not_change_when_data_grows() -> None:
    small = split_by_speaker(_examples([f"{i:04d}" for i in range(30)]), 0.25)
    big = split_by_speaker(_examples([f"{i:04d}" for i in range(200)]), 0.25)
    assert small.heldout_speakers <= big.heldout_speakers
    assert not (small.heldout_speakers & {e.speaker for e in big.train})


@pytest.mark.parametrize("n", [2, 3, 5])
def test_never_one_sided_with_two_or_more_speakers(n) -> None:
    for offset in range(0, 300, 7):
        split = split_by_speaker(_examples([f"s{offset + i}" for i in range(n)]), 0.2)
        assert split.train and split.heldout


def test_cap_items_is_stable_and_spread() -> None:
    exs = _examples([f"{i:04d}" for i in range(10)], per=10)
    a = cap_items(exs, 30, seed=1)
    assert len(a) == 30 and [e.utt_id for e in a] == [e.utt_id for e in cap_items(exs, 30, seed=1)]
    assert len({e.speaker for e in a}) >= 8
    assert cap_items(exs, None) is exs
