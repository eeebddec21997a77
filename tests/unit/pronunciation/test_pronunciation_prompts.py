"""Prompts: the paper's text for the full mode, fixed instructions per mode, per-request tail."""

from __future__ import annotations

import pytest

from pronunciation.lexicon import build_reference
from pronunciation.output_format import format_spec
from pronunciation.prompts import PAPER_PROMPT, build_prompt, instructions_for
from pronunciation.schema import Granularity

REF = build_reference("Mark is going", [["M", "AA0", "R", "K"], ["IH0", "Z"], ["G", "OW0", "IH0", "NG"]])


def test_full_prompt_is_the_papers_reordered() -> None:
    p = build_prompt(REF, Granularity.FULL)
    paper = PAPER_PROMPT.replace("{REFERENCE TEXT}", "MARK IS GOING").replace(
        "{REFERENCE PHONE SEQUENCE}", "M AA0 R K - IH0 Z - G OW0 IH0 NG")
    assert sorted((p.instructions + "\n" + p.request).split("\n")) == sorted(paper.split("\n"))
    assert p.request == ("Reference text: MARK IS GOING.\n"
                         "Reference phone sequence: M AA0 R K - IH0 Z - G OW0 IH0 NG.")
    assert p.instructions.endswith(format_spec(Granularity.FULL))
    assert PAPER_PROMPT.startswith("You are a pronunciation evaluation teacher who analyzes speech")
    assert "\u2018-\u2019 indicates word boundaries" in PAPER_PROMPT


@pytest.mark.parametrize("g", list(Granularity))
def test_instructions_are_fixed_per_mode_and_request_is_not(g: Granularity) -> None:
    other = build_reference("the cat")
    a, b = build_prompt(REF, g), build_prompt(other, g)
    assert a.instructions == b.instructions == instructions_for(g)
    assert a.request != b.request
    assert "MARK" not in a.instructions and "{" in a.instructions  # only the paper's placeholders
    assert a.instructions.endswith(format_spec(g))
    assert "Reference text:" in a.request and "Reference phone sequence:" in a.request


def test_modes_differ_and_mention_only_their_scores() -> None:
    texts = {g: instructions_for(g) for g in Granularity}
    assert len(set(texts.values())) == len(Granularity)
    assert "stress" not in texts[Granularity.SENTENCE]
    assert "phoneme" not in texts[Granularity.SENTENCE_WORD]
    assert "Fluency Score: {Flu}" in texts[Granularity.SENTENCE_FLUENCY]
    assert "prosody" not in texts[Granularity.SENTENCE_FLUENCY].lower()
    assert "Word Scores: {W1}/{Acc} {W2}/{Acc} ..." in texts[Granularity.WORD_ACCURACY]
