"""The score schema: what one assessment of one utterance holds, for every granularity mode.

The gateway returns these models, the worker stores them and the output format renders and
parses them, so they are plain pydantic models with no model-side imports. Each score carries
both the model's argmax value (an integer 0..10, what the text format shows) and the expected
value under the model's distribution over the allowed values: integer scores tie a lot, and the
continuous one breaks the ties that hold rank correlation (SCC) down.

`MODE_FIELDS` is the single statement of which scores each mode produces; the prompts, the output
format and the validation below all read it, so a mode cannot mean different things in
different places. Fields a mode does not produce are None (or empty lists) and validation
enforces it, so a stored assessment always says exactly what was scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Granularity(StrEnum):
    """Which scores to produce; the paper's full prompt and its simplified variants."""

    FULL = "full"  # sentence (5 aspects) + word (accuracy, stress, total) + phone accuracy
    SENTENCE_WORD = "sentence_word"  # sentence (5 aspects) + word (accuracy, stress, total)
    SENTENCE = "sentence"  # sentence (5 aspects)
    WORD_ACCURACY = "word_accuracy"  # word accuracy only
    SENTENCE_ACCURACY = "sentence_accuracy"
    SENTENCE_FLUENCY = "sentence_fluency"
    SENTENCE_PROSODY = "sentence_prosody"
    SENTENCE_TOTAL = "sentence_total"


SENTENCE_ASPECTS: tuple[str, ...] = ("accuracy", "fluency", "prosody", "completeness", "total")
"""Sentence aspects in the paper's order ("Sentence Scores: {Acc} {Flu} {Pro} {Com} {Tot}")."""

WORD_ASPECTS: tuple[str, ...] = ("accuracy", "stress", "total")
"""Word aspects in the paper's order ("{W}/{Acc}/{Str}/{Tot}")."""


@dataclass(frozen=True)
class ModeFields:
    """The scores one granularity mode produces, in output order."""

    sentence: tuple[str, ...]
    word: tuple[str, ...]
    phones: bool


MODE_FIELDS: dict[Granularity, ModeFields] = {
    Granularity.FULL: ModeFields(SENTENCE_ASPECTS, WORD_ASPECTS, True),
    Granularity.SENTENCE_WORD: ModeFields(SENTENCE_ASPECTS, WORD_ASPECTS, False),
    Granularity.SENTENCE: ModeFields(SENTENCE_ASPECTS, (), False),
    Granularity.WORD_ACCURACY: ModeFields((), ("accuracy",), False),
    Granularity.SENTENCE_ACCURACY: ModeFields(("accuracy",), (), False),
    Granularity.SENTENCE_FLUENCY: ModeFields(("fluency",), (), False),
    Granularity.SENTENCE_PROSODY: ModeFields(("prosody",), (), False),
    Granularity.SENTENCE_TOTAL: ModeFields(("total",), (), False),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Score(_Model):
    """One score: the argmax value the text shows and the model's expected value."""

    value: int = Field(ge=0, le=10)
    expected: float = Field(ge=0.0, le=10.0, allow_inf_nan=False)

    @classmethod
    def exact(cls, value: int) -> Score:
        """A score known as an integer only (parsed text, human annotations)."""
        return cls(value=value, expected=float(value))


class SentenceScores(_Model):
    accuracy: Score | None = None
    fluency: Score | None = None
    prosody: Score | None = None
    completeness: Score | None = None
    total: Score | None = None


class PhoneScore(_Model):
    phone: str = Field(min_length=1)
    accuracy: Score


class WordScores(_Model):
    text: str = Field(min_length=1)
    accuracy: Score | None = None
    stress: Score | None = None  # 10 = correct stress placement, 5 = incorrect; nothing else
    total: Score | None = None
    phones: list[PhoneScore] = Field(default_factory=list)

    @field_validator("stress")
    @classmethod
    def _stress_is_5_or_10(cls, v: Score | None) -> Score | None:
        if v is not None:
            if v.value not in (5, 10):
                raise ValueError(f"stress must be 5 or 10, got {v.value}")
            if not 5.0 <= v.expected <= 10.0:
                raise ValueError(f"expected stress must lie in [5, 10], got {v.expected}")
        return v


class Assessment(_Model):
    """All scores for one utterance in one granularity mode."""

    granularity: Granularity
    sentence: SentenceScores | None = None
    words: list[WordScores] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fields_match_mode(self) -> Assessment:
        fields = MODE_FIELDS[self.granularity]
        g = self.granularity.value
        if fields.sentence:
            if self.sentence is None:
                raise ValueError(f"mode {g} needs sentence scores")
            for aspect in SENTENCE_ASPECTS:
                present = getattr(self.sentence, aspect) is not None
                if present != (aspect in fields.sentence):
                    want = "needs" if aspect in fields.sentence else "does not produce"
                    raise ValueError(f"mode {g} {want} sentence {aspect}")
        elif self.sentence is not None:
            raise ValueError(f"mode {g} does not produce sentence scores")
        if fields.word:
            if not self.words:
                raise ValueError(f"mode {g} needs word scores")
        elif self.words:
            raise ValueError(f"mode {g} does not produce word scores")
        for i, word in enumerate(self.words):
            for aspect in WORD_ASPECTS:
                present = getattr(word, aspect) is not None
                if present != (aspect in fields.word):
                    want = "needs" if aspect in fields.word else "does not produce"
                    raise ValueError(f"mode {g} {want} word[{i}].{aspect} ({word.text!r})")
            if fields.phones and not word.phones:
                raise ValueError(f"mode {g} needs phone scores for word[{i}] ({word.text!r})")
            if not fields.phones and word.phones:
                raise ValueError(f"mode {g} does not produce phone scores (word[{i}])")
        return self

