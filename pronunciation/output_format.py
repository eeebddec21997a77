"""The answer format: the paper's score text (section 2.1), for every granularity mode.

The exact text, chosen once (the training targets, the constrained decoder and the test-side parser in tests/unit/pronunciation/answer_parser.py all
derive from `build_template`, so they cannot drift apart):

- lines are joined by a single "\\n"; no leading or trailing whitespace, no trailing newline;
- sentence line:  ``Sentence Scores: {Acc} {Flu} {Pro} {Com} {Tot}`` (one space between scores);
- word line:      ``Word Scores: {W1}/{Acc}/{Str}/{Tot} {W2}/{Acc}/{Str}/{Tot} ...``, word text
  exactly as in the reference (upper case), fields joined by "/", words by one space;
- phone line:     ``Phone Scores: {P1}/{Acc} {P2}/{Acc} - {P3}/{Acc} ...``, phones as in the
  reference (ARPAbet with stress digit), one space between phones, " - " between words;
- scores are decimal integers without leading zeros: 0..10, word stress only 5 or 10.

Per mode (MODE_FIELDS in schema.py says which scores each mode has):

==================  =====================================================================
full                ``Sentence Scores: 8 9 7 10 8``
                    ``Word Scores: MARK/8/10/8 IS/9/10/9``
                    ``Phone Scores: M/10 AA0/9 R/8 K/10 - IH0/10 Z/10``
sentence_word       the first two lines of full
sentence            the first line of full
word_accuracy       ``Word Scores: MARK/8 IS/9``
sentence_accuracy   ``Accuracy Score: 8``
sentence_fluency    ``Fluency Score: 8``
sentence_prosody    ``Prosody Score: 8``
sentence_total      ``Total Score: 8``
==================  =====================================================================

Because the reference words and phones are known before the model runs, the whole answer
except its numbers is known: `build_template` returns it as literals and slots (template.py).
Literals are whole pieces ("Sentence Scores: ", " ", " IS/", "\\nPhone Scores: M/", " - IH0/"):
every slot is followed by a literal starting with " ", "/" or "\\n", never by a digit, so the
text parses without ambiguity. Slot names: ``sentence.<aspect>``, ``word[i].<aspect>``,
``word[i].phone[j].accuracy`` (0-based).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from pronunciation.lexicon import Reference
from pronunciation.schema import (
    MODE_FIELDS,
    SENTENCE_ASPECTS,
    Assessment,
    Granularity,
    PhoneScore,
    Score,
    SentenceScores,
    WordScores,
)
from pronunciation.template import SCORE_VALUES, STRESS_VALUES, Literal, Slot, SlotName, Template

LINE_SEP = "\n"
SENTENCE_LABEL = "Sentence Scores: "
WORD_LABEL = "Word Scores: "
PHONE_LABEL = "Phone Scores: "
SCORE_SEP = " "
FIELD_SEP = "/"
WORD_SEP = " "
PHONE_SEP = " "
WORD_BOUNDARY = " - "

SINGLE_ASPECT_LABELS: dict[str, str] = {
    "accuracy": "Accuracy Score: ",
    "fluency": "Fluency Score: ",
    "prosody": "Prosody Score: ",
    "completeness": "Completeness Score: ",
    "total": "Total Score: ",
}
"""Label of the one-line answer of a single sentence-aspect mode."""

_ABBREV = {
    "accuracy": "Acc",
    "fluency": "Flu",
    "prosody": "Pro",
    "completeness": "Com",
    "total": "Tot",
    "stress": "Str",
}


# --- slot names ------------------------------------------------------------------------------


sentence_slot = SlotName.for_sentence  # "sentence.fluency"
word_slot = SlotName.for_word  # word i's aspect (0-based): "word[2].stress"
phone_slot = SlotName.for_phone  # phone j of word i (0-based): "word[0].phone[1].accuracy"


# --- template ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """A template plus, per segment, what it stands for (used in parse error messages).

    A literal's context is a tuple of (offset in the literal, description) pieces, because one
    literal may join several pieces (" " + "IS/").
    """

    template: Template
    contexts: tuple[tuple[tuple[int, str], ...] | str, ...]


class _Builder:
    def __init__(self) -> None:
        self.segments: list[Literal | Slot] = []
        self.contexts: list[list[tuple[int, str]] | str] = []

    def lit(self, text: str, context: str) -> None:
        if self.segments and isinstance(self.segments[-1], Literal):
            prev = self.segments[-1].text
            self.segments[-1] = Literal(prev + text)
            pieces = self.contexts[-1]
            assert isinstance(pieces, list)
            pieces.append((len(prev), context))
        else:
            self.segments.append(Literal(text))
            self.contexts.append([(0, context)])

    def slot(self, name: str, context: str, values: tuple[int, ...] = SCORE_VALUES) -> None:
        self.segments.append(Slot(name, values))
        self.contexts.append(context)

    def build(self) -> _Layout:
        return _Layout(
            Template(tuple(self.segments)),
            tuple(tuple(c) if isinstance(c, list) else c for c in self.contexts),
        )


@lru_cache(maxsize=512)
def _layout(reference: Reference, granularity: Granularity) -> _Layout:
    fields = MODE_FIELDS[Granularity(granularity)]
    b = _Builder()
    lines = 0

    def newline(label: str) -> None:
        nonlocal lines
        if lines:
            b.lit(LINE_SEP, f"line break before the {label.strip()!r} line")
        b.lit(label, f"the {label.strip()!r} label")
        lines += 1

    if len(fields.sentence) == 1:
        aspect = fields.sentence[0]
        newline(SINGLE_ASPECT_LABELS[aspect])
        b.slot(sentence_slot(aspect), f"{sentence_slot(aspect)} score")
    elif fields.sentence:
        newline(SENTENCE_LABEL)
        for k, aspect in enumerate(fields.sentence):
            if k:
                b.lit(SCORE_SEP, f"space before {sentence_slot(aspect)}")
            b.slot(sentence_slot(aspect), f"{sentence_slot(aspect)} score")
    if fields.word:
        newline(WORD_LABEL)
        for i, word in enumerate(reference.words):
            if i:
                b.lit(WORD_SEP, f"space before word[{i}] ({word.text})")
            b.lit(word.text + FIELD_SEP, f"word[{i}] text {word.text!r} and '/'")
            for k, aspect in enumerate(fields.word):
                if k:
                    b.lit(FIELD_SEP, f"'/' before {word_slot(i, aspect)} ({word.text})")
                values = STRESS_VALUES if aspect == "stress" else SCORE_VALUES
                b.slot(word_slot(i, aspect), f"{word_slot(i, aspect)} ({word.text}) score", values)
    if fields.phones:
        newline(PHONE_LABEL)
        for i, word in enumerate(reference.words):
            for j, phone in enumerate(word.phones):
                if i and not j:
                    b.lit(WORD_BOUNDARY, f"word boundary ' - ' before word[{i}] ({word.text})")
                elif j:
                    b.lit(PHONE_SEP, f"space before word[{i}].phone[{j}] ({phone} in {word.text})")
                b.lit(phone + FIELD_SEP, f"word[{i}].phone[{j}] symbol {phone!r} and '/'")
                b.slot(phone_slot(i, j), f"{phone_slot(i, j)} ({phone} in {word.text}) score")
    return b.build()


def build_template(reference: Reference, granularity: Granularity) -> Template:
    """The answer for `reference` in `granularity` mode, with a slot for every score."""
    return _layout(reference, Granularity(granularity)).template


def format_spec(granularity: Granularity) -> str:
    """The output-format lines the prompt shows, with the paper's placeholders ({Acc}, {W1}...)."""
    fields = MODE_FIELDS[Granularity(granularity)]
    lines: list[str] = []
    if len(fields.sentence) == 1:
        aspect = fields.sentence[0]
        lines.append(f"{SINGLE_ASPECT_LABELS[aspect]}{{{_ABBREV[aspect]}}}")
    elif fields.sentence:
        lines.append(SENTENCE_LABEL + " ".join(f"{{{_ABBREV[a]}}}" for a in fields.sentence))
    if fields.word:
        tail = "".join(f"/{{{_ABBREV[a]}}}" for a in fields.word)
        lines.append(f"{WORD_LABEL}{{W1}}{tail} {{W2}}{tail} ...")
    if fields.phones:
        lines.append(f"{PHONE_LABEL}{{P1}}/{{Acc}} {{P2}}/{{Acc}} - {{P3}}/{{Acc}} ...")
    return LINE_SEP.join(lines)


# --- assessment <-> slot values -----------------------------------------------------------------


def slot_values(assessment: Assessment) -> dict[str, int]:
    """The argmax value of every score in `assessment`, by slot name."""
    out: dict[str, int] = {}
    if assessment.sentence is not None:
        for aspect in SENTENCE_ASPECTS:
            score = getattr(assessment.sentence, aspect)
            if score is not None:
                out[sentence_slot(aspect)] = score.value
    for i, word in enumerate(assessment.words):
        for aspect in ("accuracy", "stress", "total"):
            score = getattr(word, aspect)
            if score is not None:
                out[word_slot(i, aspect)] = score.value
        for j, phone in enumerate(word.phones):
            out[phone_slot(i, j)] = phone.accuracy.value
    return out


def assessment_from_slots(
    reference: Reference,
    granularity: Granularity,
    values: dict[str, tuple[int, float]],
) -> Assessment:
    """Build the Assessment from (argmax, expected) per slot name, as the decoder reads them.

    Every slot of the template must have a value and no other name may appear: a mismatch
    means the runtime and the format disagree, which must fail loudly, not store half a result.
    """
    granularity = Granularity(granularity)
    names = {s.name for s in build_template(reference, granularity).slots}
    missing = sorted(names - values.keys())
    extra = sorted(values.keys() - names)
    if missing or extra:
        raise ValueError(
            f"slot values do not fit the {granularity.value} template: "
            f"missing {missing[:10]}, unexpected {extra[:10]}"
        )

    def score(name: str) -> Score:
        value, expected = values[name]
        return Score(value=value, expected=expected)

    fields = MODE_FIELDS[granularity]
    sentence = None
    if fields.sentence:
        sentence = SentenceScores(**{a: score(sentence_slot(a)) for a in fields.sentence})
    words = []
    if fields.word:
        for i, word in enumerate(reference.words):
            phones = []
            if fields.phones:
                phones = [
                    PhoneScore(phone=p, accuracy=score(phone_slot(i, j)))
                    for j, p in enumerate(word.phones)
                ]
            words.append(
                WordScores(
                    text=word.text,
                    phones=phones,
                    **{a: score(word_slot(i, a)) for a in fields.word},
                )
            )
    return Assessment(granularity=granularity, sentence=sentence, words=words)


# --- render --------------------------------------------------------------------------------------


def render(assessment: Assessment, reference: Reference) -> str:
    """The answer text for `assessment` (argmax values): training targets and stored raw text."""
    _check_fits(assessment, reference)
    return build_template(reference, assessment.granularity).render(slot_values(assessment))


def _check_fits(assessment: Assessment, reference: Reference) -> None:
    if not MODE_FIELDS[assessment.granularity].word:
        return
    if len(assessment.words) != len(reference.words):
        raise ValueError(
            f"the assessment has {len(assessment.words)} words, "
            f"the reference {len(reference.words)}"
        )
    for i, (got, ref) in enumerate(zip(assessment.words, reference.words, strict=True)):
        if got.text != ref.text:
            raise ValueError(f"word[{i}] is {got.text!r} in the assessment, {ref.text!r} in the reference")
        if got.phones and tuple(p.phone for p in got.phones) != ref.phones:
            raise ValueError(
                f"word[{i}] ({ref.text}) has phones {[p.phone for p in got.phones]} in the "
                f"assessment, {list(ref.phones)} in the reference"
            )


# --- speechocean762 scales ----------------------------------------------------------------------


def phone_score_to_10(x: float) -> int:
    """A speechocean762 phone accuracy (0..2, an average of experts) on the 0..10 scale.

    x * 5, rounded half up (Python's round() would send 0.5 to 0 and 1.5 to 2 unevenly); the
    small epsilon absorbs float error such as 1.1 * 5 = 5.500000000000001 or 0.7 * 5 = 3.4999....
    """
    if not isinstance(x, (int, float)) or math.isnan(x) or not -1e-9 <= x <= 2 + 1e-9:
        raise ValueError(f"a phone score must lie in [0, 2], got {x!r}")
    return min(10, max(0, math.floor(x * 5 + 0.5 + 1e-9)))
