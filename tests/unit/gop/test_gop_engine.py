"""The gop engine on real learners' clips: it scores every granularity mode, names its engine and
model version, and its scores move the right way when the audio is damaged on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from pronunciation.assess import AssessmentRequest, assess
from pronunciation.audio import load_audio
from pronunciation.schema import Granularity
from tests.unit.gop.conftest import needs_sample

pytestmark = needs_sample

CLIP = "000030012"  # MARK IS GOING TO SEE ELEPHANT: a clear reading, 6 words


def _audio(item) -> np.ndarray:
    return load_audio(item.audio_path.read_bytes())


def _score(engine, audio, ref, mode=Granularity.FULL):
    [r] = assess(engine, [AssessmentRequest(audio, ref, mode)])
    return r


@pytest.mark.parametrize("mode", list(Granularity))
def test_every_mode_yields_a_valid_assessment_naming_the_engine(gop_engine, sample_items, mode) -> None:
    item = sample_items[CLIP]
    r = _score(gop_engine, _audio(item), item.reference, mode)
    assert r.assessment.granularity == mode
    assert (r.engine, r.model_version, r.model_is_tiny) == ("gop", gop_engine.model_version, False)
    assert r.model_version.startswith("gop-")


def _word_span(engine, audio, ref, k: int) -> tuple[int, int]:
    """Sample range of word k as the engine's own alignment places it."""
    f = engine.extractor.extract(audio, ref)
    m = f.word_of_phone == k
    start = int(f.phone_start[m].min()) * 160
    end = int((f.phone_start[m] + f.phone_frames[m]).max()) * 160 + 400
    return start, end


def test_cutting_a_word_out_lowers_completeness_and_that_words_accuracy(gop_engine, sample_items) -> None:
    item = sample_items[CLIP]
    audio, ref = _audio(item), item.reference
    k = 5  # ELEPHANT
    a, b = _word_span(gop_engine, audio, ref, k)
    cut = np.r_[audio[:a], audio[b:]]
    intact = _score(gop_engine, audio, ref).assessment
    damaged = _score(gop_engine, cut, ref).assessment
    assert damaged.words[k].accuracy.expected < intact.words[k].accuracy.expected - 1.0
    assert damaged.sentence.completeness.expected < intact.sentence.completeness.expected


def test_inserted_pauses_lower_fluency(gop_engine, sample_items) -> None:
    item = sample_items[CLIP]
    audio, ref = _audio(item), item.reference
    f = gop_engine.extractor.extract(audio, ref)
    quiet = (np.random.RandomState(0).randn(16000) * 1e-3).astype(np.float32)  # 1 s of near silence
    pieces, prev = [], 0
    for k in (1, 3):  # after IS and after TO
        m = f.word_of_phone == k
        end = int((f.phone_start[m] + f.phone_frames[m]).max()) * 160
        pieces += [audio[prev:end], quiet]
        prev = end
    paused = np.concatenate(pieces + [audio[prev:]])
    fluent = _score(gop_engine, audio, ref, Granularity.SENTENCE).assessment.sentence.fluency.expected
    halting = _score(gop_engine, paused, ref, Granularity.SENTENCE).assessment.sentence.fluency.expected
    assert halting < fluent - 0.5
