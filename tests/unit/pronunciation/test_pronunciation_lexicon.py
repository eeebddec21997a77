"""Reference building: tokenization, CMUdict lookup, caller phones, and the error codes."""

from __future__ import annotations

import pickle

import pytest

from pronunciation.errors import (
    BadPhonesError,
    EmptyReferenceError,
    PronunciationInputError,
    ReferenceTooLongError,
    UnknownWordError,
)
from pronunciation.lexicon import ARPABET, build_reference, tokenize


def test_known_words_get_cmudict_phones() -> None:
    ref = build_reference("Mark is going to see elephant.")
    assert ref.text == "MARK IS GOING TO SEE ELEPHANT"
    assert [w.text for w in ref.words] == ["MARK", "IS", "GOING", "TO", "SEE", "ELEPHANT"]
    assert ref.words[0].phones == ("M", "AA1", "R", "K")
    assert ref.words[5].phones == ("EH1", "L", "AH0", "F", "AH0", "N", "T")
    assert ref.phone_sequence.startswith("M AA1 R K - IH1 Z - G OW1 IH0 NG")


def test_apostrophes_kept_punctuation_dropped() -> None:
    assert tokenize("Here is Time's cloth, isn't it?") == ["HERE", "IS", "TIME'S", "CLOTH", "ISN'T", "IT"]
    assert tokenize("Look at Bob\u2019s T-shirt!") == ["LOOK", "AT", "BOB'S", "T", "SHIRT"]
    assert tokenize("'quoted' words -- and... more") == ["QUOTED", "WORDS", "AND", "MORE"]
    ref = build_reference("here is time's cloth")
    assert ref.words[2].text == "TIME'S" and ref.words[2].phones == ("T", "AY1", "M", "Z")


def test_unknown_words_are_named() -> None:
    with pytest.raises(UnknownWordError) as info:
        build_reference("the zqxwv saw a blorptastic cat zqxwv")
    err = info.value
    assert err.code == "unknown_word"
    assert err.words == ["ZQXWV", "BLORPTASTIC"]
    assert "'ZQXWV'" in err.message and "'BLORPTASTIC'" in err.message


def test_caller_phones_win_and_unlock_unknown_words() -> None:
    ref = build_reference("Mark zqxwv", [["m", "aa0", "r", "k"], ["Z", "IH1", "K", "S"]])
    assert ref.words[0].phones == ("M", "AA0", "R", "K")
    assert ref.words[1].phones == ("Z", "IH1", "K", "S")


def test_bad_phones() -> None:
    with pytest.raises(BadPhonesError, match="give 1 words but the text has 2") as info:
        build_reference("mark is", [["M", "AA1", "R", "K"]])
    assert info.value.code == "bad_phones"
    with pytest.raises(BadPhonesError, match="'QQ'"):
        build_reference("mark", [["M", "QQ", "R", "K"]])
    with pytest.raises(BadPhonesError, match="no phones"):
        build_reference("mark", [[]])
    with pytest.raises(BadPhonesError, match="must be a list"):
        build_reference("mark", ["M AA1 R K"])
    with pytest.raises(BadPhonesError):
        build_reference("mark", "M AA1 R K")  # type: ignore[arg-type]


def test_empty_and_too_long() -> None:
    for text in ("", "   ", "?!. -- ,"):
        with pytest.raises(EmptyReferenceError) as info:
            build_reference(text)
        assert info.value.code == "empty_reference"
    with pytest.raises(ReferenceTooLongError, match="61 words; at most 60") as info:
        build_reference(" ".join(["the"] * 61))
    assert info.value.code == "reference_too_long"
    assert len(build_reference(" ".join(["the"] * 60)).words) == 60
    with pytest.raises(ReferenceTooLongError):
        build_reference("a cat", max_words=1)
    with pytest.raises(ReferenceTooLongError, match="characters"):
        build_reference("a" * 100_000)


def test_arpabet_inventory() -> None:
    assert len(ARPABET) == 84
    assert {"AA", "AA0", "AA1", "AA2", "ZH", "HH"} <= ARPABET
    assert "AX" not in ARPABET and "Z0" not in ARPABET


def test_errors_share_a_base_and_pickle() -> None:
    for err in (UnknownWordError(["FOO"]), EmptyReferenceError(), BadPhonesError("x")):
        assert isinstance(err, PronunciationInputError)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.code == err.code and back.message == err.message
        assert str(back) == str(err)
    assert pickle.loads(pickle.dumps(UnknownWordError(["FOO"]))).words == ["FOO"]
