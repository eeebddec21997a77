"""Prompts: the paper's section 2.1 prompt and its simplified variants, one per granularity mode.

Each prompt is split in two, for speed (DESIGN.md, "Prompt layout for speed"):

- `instructions`: the task description and the output-format spec. Identical for every request
  of a mode (about 400 tokens for `full`), so the runtime computes its KV cache once per adapter
  and mode and reuses it (prefix caching);
- `request`: the per-utterance part, "Reference text: ...." and "Reference phone sequence: ....".

The runtime puts instructions, then the audio, then request. Training builds its inputs through
the same function, so fine-tuning sees exactly the layout inference uses. Compared with the
paper, only the order of lines differs: the two reference lines move after the audio. The
sentence "In the phone sequence, '-' indicates word boundaries." stays with the instructions.

The paper omits its simplified prompts ("Due to space limitations"); ours keep the paper's
sentences for each score a mode produces and drop the others, so a mode's prompt never asks for
a score its output format does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pronunciation.lexicon import Reference
from pronunciation.output_format import format_spec
from pronunciation.schema import Granularity

PAPER_PROMPT = (
    "You are a pronunciation evaluation teacher who analyzes speech at sentence, word and phone "
    "levels. At the sentence level, the evaluation includes accuracy, fluency, prosody, "
    "completeness, and a total score. Accuracy reflects phone-level pronunciation, accent, and "
    "clarity; fluency considers pauses, repetitions, and stammering; prosody assesses "
    "intonation, speed, and rhythm; and completeness indicates the percentage of words from the "
    "target text that were actually pronounced correctly. The total score is a comprehensive "
    "measure that reflects all aspects of speech. At the word level, the evaluation includes "
    "accuracy, stress, and a total score. Accuracy again considers phone pronunciation, accent, "
    "and clarity, while the stress score reflects the correctness of stress placement, where a "
    "score of 10 indicates correct stress and 5 indicates incorrect stress. At phone level, we "
    "assess the goodness of each phoneme within the words. All scores range from 0 to 10, with 0 "
    "representing the poorest pronunciation and 10 representing the best, except for the "
    "word-level stress score, which is either 5 or 10.\n"
    "Please evaluate the provided audio at the sentence, word, and phone levels using the given "
    "reference text and phone sequence.\n"
    "Reference text: {REFERENCE TEXT}.\n"
    "Reference phone sequence: {REFERENCE PHONE SEQUENCE}.\n"
    "In the phone sequence, \u2018-\u2019 indicates word boundaries. The final output format "
    "should be structured as follows:\n"
    "Sentence Scores: {Acc} {Flu} {Pro} {Com} {Tot}\n"
    "Word Scores: {W1}/{Acc}/{Str}/{Tot} {W2}/{Acc}/{Str}/{Tot} ...\n"
    "Phone Scores: {P1}/{Acc} {P2}/{Acc} - {P3}/{Acc} ..."
)
"""The paper's full prompt, verbatim (section 2.1), one line per line of the paper."""

# The paper's sentences, reused by the simplified prompts.
_SENTENCE_ALL = (
    "At the sentence level, the evaluation includes accuracy, fluency, prosody, completeness, "
    "and a total score. Accuracy reflects phone-level pronunciation, accent, and clarity; "
    "fluency considers pauses, repetitions, and stammering; prosody assesses intonation, speed, "
    "and rhythm; and completeness indicates the percentage of words from the target text that "
    "were actually pronounced correctly. The total score is a comprehensive measure that "
    "reflects all aspects of speech."
)
_WORD_ALL = (
    "At the word level, the evaluation includes accuracy, stress, and a total score. Accuracy "
    "again considers phone pronunciation, accent, and clarity, while the stress score reflects "
    "the correctness of stress placement, where a score of 10 indicates correct stress and 5 "
    "indicates incorrect stress."
)
_PHONE = "At phone level, we assess the goodness of each phoneme within the words."
_RANGE_WITH_STRESS = (
    "All scores range from 0 to 10, with 0 representing the poorest pronunciation and 10 "
    "representing the best, except for the word-level stress score, which is either 5 or 10."
)
_RANGE_ALL = (
    "All scores range from 0 to 10, with 0 representing the poorest pronunciation and 10 "
    "representing the best."
)
_RANGE_ONE = (
    "The score ranges from 0 to 10, with 0 representing the poorest pronunciation and 10 "
    "representing the best."
)
_BOUNDARY_AND_FORMAT = (
    "In the phone sequence, \u2018-\u2019 indicates word boundaries. The final output format "
    "should be structured as follows:"
)


def _task(what: str) -> str:
    return f"Please evaluate {what} using the given reference text and phone sequence."


def _role(levels: str) -> str:
    return f"You are a pronunciation evaluation teacher who analyzes speech at {levels}."


_DESCRIPTIONS: dict[Granularity, tuple[str, str]] = {
    # mode: (description paragraph, task sentence)
    Granularity.FULL: (
        " ".join([_role("sentence, word and phone levels"), _SENTENCE_ALL, _WORD_ALL, _PHONE,
                  _RANGE_WITH_STRESS]),
        _task("the provided audio at the sentence, word, and phone levels"),
    ),
    Granularity.SENTENCE_WORD: (
        " ".join([_role("sentence and word levels"), _SENTENCE_ALL, _WORD_ALL,
                  _RANGE_WITH_STRESS]),
        _task("the provided audio at the sentence and word levels"),
    ),
    Granularity.SENTENCE: (
        " ".join([_role("the sentence level"), _SENTENCE_ALL, _RANGE_ALL]),
        _task("the provided audio at the sentence level"),
    ),
    Granularity.WORD_ACCURACY: (
        " ".join([
            _role("the word level"),
            "At the word level, the evaluation includes accuracy only. Accuracy considers phone "
            "pronunciation, accent, and clarity.",
            _RANGE_ALL,
        ]),
        _task("the accuracy of each word in the provided audio"),
    ),
    Granularity.SENTENCE_ACCURACY: (
        " ".join([
            _role("the sentence level"),
            "At the sentence level, the evaluation includes accuracy only. Accuracy reflects "
            "phone-level pronunciation, accent, and clarity.",
            _RANGE_ONE,
        ]),
        _task("the sentence-level accuracy of the provided audio"),
    ),
    Granularity.SENTENCE_FLUENCY: (
        " ".join([
            _role("the sentence level"),
            "At the sentence level, the evaluation includes fluency only. Fluency considers "
            "pauses, repetitions, and stammering.",
            _RANGE_ONE,
        ]),
        _task("the sentence-level fluency of the provided audio"),
    ),
    Granularity.SENTENCE_PROSODY: (
        " ".join([
            _role("the sentence level"),
            "At the sentence level, the evaluation includes prosody only. Prosody assesses "
            "intonation, speed, and rhythm.",
            _RANGE_ONE,
        ]),
        _task("the sentence-level prosody of the provided audio"),
    ),
    Granularity.SENTENCE_TOTAL: (
        " ".join([
            _role("the sentence level"),
            "At the sentence level, the evaluation includes a total score only. The total score "
            "is a comprehensive measure that reflects all aspects of speech: accuracy, fluency, "
            "prosody, and completeness.",
            _RANGE_ONE,
        ]),
        _task("the sentence-level total score of the provided audio"),
    ),
}


@dataclass(frozen=True)
class Prompt:
    """A prompt in the runtime's order: `instructions`, then the audio, then `request`."""

    instructions: str
    request: str


@cache
def instructions_for(granularity: Granularity) -> str:
    """The fixed part of every prompt of a mode: the cacheable prefix."""
    description, task = _DESCRIPTIONS[Granularity(granularity)]
    return "\n".join([description, task, _BOUNDARY_AND_FORMAT, format_spec(granularity)])


def request_for(reference: Reference) -> str:
    """The per-utterance part: the paper's two reference lines."""
    return (
        f"Reference text: {reference.text}.\n"
        f"Reference phone sequence: {reference.phone_sequence}."
    )


def build_prompt(reference: Reference, granularity: Granularity) -> Prompt:
    """The prompt for scoring `reference` in `granularity` mode, split for prefix caching."""
    return Prompt(
        instructions=instructions_for(Granularity(granularity)), request=request_for(reference)
    )
