"""The gateway's compact word index (`check_reference`) judges references exactly as the worker's
full CMUdict lookup (`build_reference`) does, without holding the phones (issue 8: gateway RSS)."""

from __future__ import annotations

import pytest

from pronunciation.errors import PronunciationInputError
from pronunciation.lexicon import _cmudict, build_reference, check_reference, is_known_word


def test_every_cmudict_word_is_known_and_others_are_not() -> None:
    words = list(_cmudict())
    assert all(is_known_word(w.upper()) for w in words[::7])
    assert not any(is_known_word(w + "qzx") for w in words[:2000])


@pytest.mark.parametrize(("text", "phones"), [
    ("We call it bear", None),
    ("Time's up, T-shirt!", None),
    ("Blorptastic zzyzx words", None),
    ("", None),
    ("word " * 61, None),
    ("x" * 101, None),
    ("bear", [["B", "EH1", "R"]]),
    ("bear", [[" b ", "eh1", "r"]]),
    ("bear", [["B", "XX"]]),
    ("two words", [["T", "UW1"]]),
])
def test_check_reference_agrees_with_build_reference(text: str, phones) -> None:
    try:
        built = build_reference(text, phones)
    except PronunciationInputError as exc:
        with pytest.raises(type(exc)) as checked:
            check_reference(text, phones)
        assert checked.value.code == exc.code and checked.value.message == exc.message
        return
    given = check_reference(text, phones)
    assert given == (None if phones is None else [w.phones for w in built.words])
