"""Score schema: ranges, stress values, and the per-mode shape every Assessment must have."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pronunciation.schema import (
    MODE_FIELDS,
    Assessment,
    Granularity,
    PhoneScore,
    Score,
    SentenceScores,
    WordScores,
)


def s(v: int) -> Score:
    return Score.exact(v)


def full_sentence() -> SentenceScores:
    return SentenceScores(accuracy=s(8), fluency=s(9), prosody=s(7), completeness=s(10), total=s(8))


def test_score_ranges() -> None:
    assert Score(value=0, expected=0.0).value == 0
    assert Score(value=10, expected=9.5).expected == 9.5
    for bad in ({"value": 11, "expected": 5.0}, {"value": -1, "expected": 5.0},
                {"value": 5, "expected": 10.5}, {"value": 5, "expected": float("nan")},
                {"value": 5, "expected": float("inf")}, {"value": 5.5, "expected": 5.0}):
        with pytest.raises(ValidationError):
            Score(**bad)


def test_stress_only_5_or_10() -> None:
    WordScores(text="MARK", stress=s(5))
    WordScores(text="MARK", stress=Score(value=10, expected=7.5))
    with pytest.raises(ValidationError, match="stress must be 5 or 10"):
        WordScores(text="MARK", stress=s(7))
    with pytest.raises(ValidationError, match="expected stress"):
        WordScores(text="MARK", stress=Score(value=5, expected=4.0))


def test_full_assessment_and_json_round_trip() -> None:
    a = Assessment(
        granularity=Granularity.FULL,
        sentence=full_sentence(),
        words=[WordScores(text="IS", accuracy=s(9), stress=s(10), total=s(9),
                          phones=[PhoneScore(phone="IH0", accuracy=s(10)),
                                  PhoneScore(phone="Z", accuracy=s(9))])],
    )
    assert Assessment.model_validate_json(a.model_dump_json()) == a


def test_mode_shape_is_enforced() -> None:
    word = WordScores(text="IS", accuracy=s(9), stress=s(10), total=s(9))
    Assessment(granularity=Granularity.SENTENCE_WORD, sentence=full_sentence(), words=[word])
    with pytest.raises(ValidationError, match="needs phone scores"):
        Assessment(granularity=Granularity.FULL, sentence=full_sentence(), words=[word])
    with pytest.raises(ValidationError, match="does not produce word scores"):
        Assessment(granularity=Granularity.SENTENCE, sentence=full_sentence(), words=[word])
    with pytest.raises(ValidationError, match="does not produce sentence fluency"):
        Assessment(granularity=Granularity.SENTENCE_ACCURACY, sentence=full_sentence())
    with pytest.raises(ValidationError, match="needs sentence scores"):
        Assessment(granularity=Granularity.SENTENCE_TOTAL)
    with pytest.raises(ValidationError, match="does not produce word\\[0\\].stress"):
        Assessment(granularity=Granularity.WORD_ACCURACY, words=[word])
    Assessment(granularity=Granularity.WORD_ACCURACY, words=[WordScores(text="IS", accuracy=s(3))])
    Assessment(granularity=Granularity.SENTENCE_FLUENCY, sentence=SentenceScores(fluency=s(3)))


def test_every_mode_is_described() -> None:
    assert set(MODE_FIELDS) == set(Granularity)
    assert [g.value for g in Granularity] == [
        "full", "sentence_word", "sentence", "word_accuracy",
        "sentence_accuracy", "sentence_fluency", "sentence_prosody", "sentence_total",
    ]
