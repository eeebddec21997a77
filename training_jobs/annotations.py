"""One expert-annotated utterance in speechocean762's `scores.json` format, checked field by field.

    {"000010011": {"text": "WE CALL IT BEAR", "accuracy": 8, "fluency": 9, "prosodic": 9,
                   "completeness": 10.0, "total": 8, "speaker": "0001", "audio": "000010011.wav",
                   "words": [{"text": "WE", "accuracy": 10, "stress": 10, "total": 10,
                              "phones": "W IY0", "phones-accuracy": [2.0, 2.0]}, ...]}}

`speaker` and `audio` are optional (speechocean762 has neither: its speaker is digits 2-5 of the
utterance id, and the audio is found by name). `phones` may be a list or a
space-joined string, as in the original file. Other keys (e.g. `mispronunciations`) are ignored.

`check_item` returns the parsed annotation AND every problem it found (not just the first), each
with a stable code, so one validation pass tells annotators all that is wrong with an utterance.
No torch here: the gateway validates batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pronunciation.errors import PronunciationInputError
from pronunciation.lexicon import ARPABET, Reference, build_reference, tokenize

SENTENCE_FIELDS: tuple[tuple[str, str], ...] = (
    # (scores.json key, our aspect name): speechocean762 says "prosodic", our schema "prosody"
    ("accuracy", "accuracy"),
    ("fluency", "fluency"),
    ("prosodic", "prosody"),
    ("completeness", "completeness"),
    ("total", "total"),
)
WORD_FIELDS: tuple[str, ...] = ("accuracy", "stress", "total")
STRESS_VALUES: tuple[float, ...] = (5.0, 10.0)
PHONE_MAX = 2.0  # speechocean762 phone accuracy: 0 (wrong) .. 2 (good), an average of experts

# Problem codes (besides the audio codes of pronunciation.audio): part of the batch API.
BAD_ITEM = "bad_item"
MISSING_FIELD = "missing_field"
BAD_VALUE = "bad_value"
SCORE_OUT_OF_RANGE = "score_out_of_range"
WORDS_MISMATCH = "words_mismatch"
PHONE_COUNT_MISMATCH = "phone_count_mismatch"
UNKNOWN_PHONE = "unknown_phone"


@dataclass(frozen=True)
class Problem:
    """Something wrong with a batch (utt_id None) or with one utterance of it."""

    utt_id: str | None
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"utt_id": self.utt_id, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class WordAnnotation:
    text: str
    accuracy: float
    stress: float
    total: float
    phones: tuple[str, ...]
    phone_scores: tuple[float, ...]  # 0..2, one per phone


@dataclass(frozen=True)
class UtteranceAnnotation:
    """The expert scores of one utterance (raw values, as annotated)."""

    utt_id: str
    text: str
    sentence: dict[str, float]  # our aspect names: accuracy, fluency, prosody, completeness, total
    words: tuple[WordAnnotation, ...]
    speaker: str
    audio_name: str | None  # explicit file name under the batch prefix, or None (find by utt id)
    reference: Reference


def default_speaker(utt_id: str) -> str:
    """The speaker of an utterance whose entry names none.

    speechocean762's ids are 9 digits, "0" + the 4-digit speaker + a 4-digit utterance number
    ("000030012" is speaker "0003", "011350225" speaker "1135": checked on all 600 sample clips),
    so the speaker is characters 1..4. Their first 4 characters ("0000", "0113") would merge up
    to ten speakers into one group. Other id schemes fall back to the first 4 characters; name
    the speaker in the entry when that is not right.
    """
    if len(utt_id) == 9 and utt_id.isdigit():
        return utt_id[1:5]
    return utt_id[:4]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_item(utt_id: str, raw: Any) -> tuple[UtteranceAnnotation | None, list[Problem]]:
    """Parse one `scores.json` entry; returns (annotation or None, every problem found)."""
    problems: list[Problem] = []

    def problem(code: str, message: str) -> None:
        problems.append(Problem(utt_id, code, message))

    if not isinstance(raw, dict):
        problem(BAD_ITEM, f"the entry must be a JSON object, got {type(raw).__name__}")
        return None, problems

    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        problem(MISSING_FIELD, "'text' (the reference sentence) is missing or empty")
        text = None

    sentence: dict[str, float] = {}
    for key, aspect in SENTENCE_FIELDS:
        if key not in raw:
            problem(MISSING_FIELD, f"sentence score '{key}' is missing")
            continue
        value = _number(raw[key])
        if value is None:
            problem(BAD_VALUE, f"sentence score '{key}' must be a number, got {raw[key]!r}")
        elif not 0 <= value <= 10:
            problem(SCORE_OUT_OF_RANGE, f"sentence {key} = {value:g} is outside 0..10")
        else:
            sentence[aspect] = value

    words_raw = raw.get("words")
    words: list[WordAnnotation] = []
    if not isinstance(words_raw, list) or not words_raw:
        problem(MISSING_FIELD, "'words' must be a non-empty list")
        words_raw = []
    for i, w in enumerate(words_raw):
        word = _check_word(i, w, problem)
        if word is not None:
            words.append(word)

    if text is not None and words_raw and len(words) == len(words_raw):
        expected = tokenize(text)
        given = [w.text for w in words]
        if given != expected:
            problem(
                WORDS_MISMATCH,
                f"the words {given} do not match the text's words {expected} ({text!r})",
            )

    speaker = raw.get("speaker", default_speaker(utt_id))
    if not isinstance(speaker, str) or not speaker:
        problem(BAD_VALUE, f"'speaker' must be a non-empty string, got {speaker!r}")
    audio_name = raw.get("audio")
    if audio_name is not None and (not isinstance(audio_name, str) or not audio_name or audio_name.startswith("/")
                                   or ".." in audio_name.split("/")):
        problem(BAD_VALUE, f"'audio' must be a file name under the batch prefix, got {audio_name!r}")

    if problems:
        return None, problems
    try:
        reference = build_reference(text, [list(w.phones) for w in words], max_words=10_000)
    except PronunciationInputError as exc:
        return None, [Problem(utt_id, exc.code, exc.message)]
    return (
        UtteranceAnnotation(
            utt_id=utt_id, text=text, sentence=sentence, words=tuple(words), speaker=speaker,
            audio_name=audio_name, reference=reference,
        ),
        [],
    )


def _check_word(i: int, w: Any, problem) -> WordAnnotation | None:
    if not isinstance(w, dict):
        problem(BAD_ITEM, f"word[{i}] must be a JSON object, got {type(w).__name__}")
        return None
    ok = True
    text = w.get("text")
    if not isinstance(text, str) or not text.strip():
        problem(MISSING_FIELD, f"word[{i}] has no 'text'")
        return None
    label = f"word[{i}] ({text})"
    scores: dict[str, float] = {}
    for key in WORD_FIELDS:
        if key not in w:
            problem(MISSING_FIELD, f"{label}: '{key}' is missing")
            ok = False
            continue
        value = _number(w[key])
        if value is None:
            problem(BAD_VALUE, f"{label}: '{key}' must be a number, got {w[key]!r}")
            ok = False
        elif key == "stress" and value not in STRESS_VALUES:
            problem(SCORE_OUT_OF_RANGE, f"{label}: stress = {value:g}, must be 5 or 10")
            ok = False
        elif not 0 <= value <= 10:
            problem(SCORE_OUT_OF_RANGE, f"{label}: {key} = {value:g} is outside 0..10")
            ok = False
        else:
            scores[key] = value

    phones_raw = w.get("phones")
    if isinstance(phones_raw, str):
        phones = tuple(phones_raw.split())
    elif isinstance(phones_raw, list) and all(isinstance(p, str) for p in phones_raw):
        phones = tuple(p.strip() for p in phones_raw)
    else:
        problem(MISSING_FIELD, f"{label}: 'phones' must be a list of ARPAbet symbols or a space-joined string")
        return None
    if not phones:
        problem(MISSING_FIELD, f"{label}: 'phones' is empty")
        return None
    unknown = [p for p in phones if p.upper() not in ARPABET]
    if unknown:
        problem(UNKNOWN_PHONE, f"{label}: unknown ARPAbet phone(s) {unknown}")
        ok = False
    phones = tuple(p.upper() for p in phones)

    acc_raw = w.get("phones-accuracy")
    if not isinstance(acc_raw, list):
        problem(MISSING_FIELD, f"{label}: 'phones-accuracy' must be a list of 0..2 scores")
        return None
    phone_scores: list[float] = []
    for j, a in enumerate(acc_raw):
        value = _number(a)
        if value is None:
            problem(BAD_VALUE, f"{label}: phones-accuracy[{j}] must be a number, got {a!r}")
            ok = False
        elif not 0 <= value <= PHONE_MAX:
            problem(SCORE_OUT_OF_RANGE, f"{label}: phones-accuracy[{j}] = {value:g} is outside 0..2")
            ok = False
        else:
            phone_scores.append(value)
    if len(acc_raw) != len(phones):
        problem(
            PHONE_COUNT_MISMATCH,
            f"{label}: {len(acc_raw)} phone scores for {len(phones)} phones ({' '.join(phones)})",
        )
        ok = False
    if not ok:
        return None
    return WordAnnotation(
        text=text.strip().upper(), accuracy=scores["accuracy"], stress=scores["stress"], total=scores["total"],
        phones=phones, phone_scores=tuple(phone_scores),
    )
