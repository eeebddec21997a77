"""The aligner: a best path always exists when the audio is long enough, and the one impossible
case (fewer frames than the phones' 3-state minimum) is a typed input error, not a crash."""

from __future__ import annotations

import numpy as np
import pytest

from pronunciation.errors import PronunciationInputError
from pronunciation.gop.align import AlignmentError, ChainUnit, viterbi
from pronunciation.gop.features import FeatureExtractor
from pronunciation.lexicon import build_reference

TRANS = np.array([[[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5]]])


def _units(pattern: str) -> list[ChainUnit]:
    return [ChainUnit((0, 0, 0), 0, c == "o") for c in pattern]


def test_path_visits_required_units_in_order_and_skips_unneeded_silence() -> None:
    units = _units("oror")  # sil? A sil? B
    t = 30
    em = np.full((t, 3 * len(units)), -50.0)
    em[:10, 3:6] = 0.0  # unit 1 (required) explains frames 0-9
    em[10:, 9:12] = 0.0  # unit 3 (required) explains frames 10-29
    ali = viterbi(em, units, TRANS)
    assert np.all(np.diff(ali.state_of_frame) >= 0)
    assert set(ali.unit_of_frame[:10]) == {1} and set(ali.unit_of_frame[10:]) == {3}
    assert 0 not in ali.unit_of_frame and 2 not in ali.unit_of_frame  # optional silences skipped


def test_every_required_unit_gets_at_least_three_frames_even_against_the_evidence() -> None:
    units = _units("orrro")
    em = np.zeros((9, 15))
    em[:, 3:6] = 5.0  # the first phone "wants" every frame
    ali = viterbi(em, units, TRANS)
    counts = np.bincount(ali.unit_of_frame, minlength=5)
    assert list(counts[1:4]) == [3, 3, 3]


def test_too_short_for_the_phones_is_a_typed_input_error() -> None:
    with pytest.raises(AlignmentError) as err:
        viterbi(np.zeros((8, 15)), _units("orrro"), TRANS)
    assert isinstance(err.value, PronunciationInputError)
    assert err.value.code == "alignment_failed" and "9" in err.value.message


def test_extractor_reports_alignment_failure_on_real_model() -> None:
    ref = build_reference("EXTRAORDINARY INTERNATIONALIZATION")
    audio = (np.random.RandomState(0).randn(1600) * 0.1).astype(np.float32)  # 0.1 s: 8 frames
    with pytest.raises(AlignmentError):
        FeatureExtractor().extract(audio, ref)
