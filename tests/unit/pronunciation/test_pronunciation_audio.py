"""Audio decoding and validation: every error code from a real encoded file, and the success paths.

All audio is synthesized here and encoded with soundfile, so the tests need no data folder.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pronunciation.audio import load_audio, speech_level_dbfs
from pronunciation.errors import PronunciationInputError


def tone(seconds: float, rate: int = 16_000, amp: float = 0.3, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(x: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def code_of(data: object, **kw: float) -> str:
    with pytest.raises(PronunciationInputError) as info:
        load_audio(data, **kw)  # type: ignore[arg-type]
    return info.value.code


def test_garbage_bytes_undecodable() -> None:
    assert code_of(b"this is not audio at all" * 50) == "audio_undecodable"
    assert code_of(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40) == "audio_undecodable"


def test_empty_bytes_and_non_bytes_undecodable() -> None:
    assert code_of(b"") == "audio_undecodable"
    assert code_of("not bytes") == "audio_undecodable"
    assert code_of(None) == "audio_undecodable"


def test_too_short() -> None:
    assert code_of(encode(tone(0.1))) == "audio_too_short"
    assert code_of(encode(np.zeros(0, dtype=np.float32))) == "audio_too_short"


def test_too_long() -> None:
    with pytest.raises(PronunciationInputError) as info:
        load_audio(encode(tone(31.0), subtype="PCM_16"))
    assert info.value.code == "audio_too_long"
    assert "30 s" in info.value.message


def test_exactly_thirty_seconds_is_accepted() -> None:
    out = load_audio(encode(tone(30.0), subtype="PCM_16"))
    assert out.shape == (480_000,)


def test_digital_silence() -> None:
    assert code_of(encode(np.zeros(32_000, dtype=np.float32))) == "audio_silent"


def test_very_low_level_noise_is_silent() -> None:
    noise = np.random.default_rng(0).normal(0, 10 ** (-70 / 20), 32_000).astype(np.float32)
    assert code_of(encode(noise, subtype="FLOAT")) == "audio_silent"


def test_clicks_and_dc_offset_are_not_speech() -> None:
    x = np.zeros(48_000, dtype=np.float32)
    x[[1000, 20_000, 40_000]] = 0.9  # three isolated clicks
    assert code_of(encode(x, subtype="FLOAT")) == "audio_silent"
    assert code_of(encode(np.full(32_000, 0.2, dtype=np.float32), subtype="FLOAT")) == "audio_silent"


def test_quiet_speech_level_passes() -> None:
    x = tone(2.0, amp=10 ** (-40 / 20) * np.sqrt(2))  # -40 dBFS RMS
    assert load_audio(encode(x, subtype="FLOAT")).shape == (32_000,)
    assert speech_level_dbfs(x, 16_000) == pytest.approx(-40.0, abs=0.2)


def test_nan_and_inf_samples_undecodable() -> None:
    x = tone(1.0)
    x[100] = np.nan
    assert code_of(encode(x, subtype="FLOAT")) == "audio_undecodable"
    y = tone(1.0)
    y[5] = np.inf
    assert code_of(encode(y, subtype="FLOAT")) == "audio_undecodable"


def test_absurd_sample_rate_undecodable() -> None:
    assert code_of(encode(tone(1.0, rate=1000), rate=1000)) == "audio_undecodable"


def test_wav_44k_stereo_to_16k_mono() -> None:
    left = tone(1.5, rate=44_100, amp=0.4)
    right = tone(1.5, rate=44_100, amp=0.2, freq=220.0)
    out = load_audio(encode(np.stack([left, right], axis=1), rate=44_100, subtype="PCM_16"))
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.shape == (24_000,)
    # The 440 Hz tone survives resampling at the right frequency.
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16_000 / out.size - 440.0) < 2.0


def test_flac() -> None:
    out = load_audio(encode(tone(2.0), fmt="FLAC", subtype="PCM_16"))
    assert out.shape == (32_000,) and out.dtype == np.float32
    np.testing.assert_allclose(out, tone(2.0), atol=1e-4)


def test_ogg_vorbis() -> None:
    out = load_audio(encode(tone(2.0, rate=48_000), rate=48_000, fmt="OGG", subtype="VORBIS"))
    assert abs(out.size - 32_000) <= 16 and out.dtype == np.float32


def test_ogg_opus() -> None:
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Opus")
    out = load_audio(encode(tone(2.0, rate=48_000), rate=48_000, fmt="OGG", subtype="OPUS"))
    assert abs(out.size - 32_000) <= 400


def test_mp3() -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    out = load_audio(encode(tone(2.0, rate=44_100), rate=44_100, fmt="MP3", subtype="MPEG_LAYER_III"))
    assert abs(out.size - 32_000) <= 1_500


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"ID3\x03"]),
    body=st.binary(max_size=400),
)
def test_no_input_crashes_with_another_error(prefix: bytes, body: bytes) -> None:
    try:
        load_audio(prefix + body)
    except PronunciationInputError:
        pass


@settings(max_examples=40, deadline=None, database=None)
@given(cut=st.integers(0, 2000), flip=st.integers(0, 2000), byte=st.integers(0, 255))
def test_truncated_or_corrupted_files_fail_cleanly(cut: int, flip: int, byte: int) -> None:
    data = bytearray(encode(tone(0.5), fmt="FLAC", subtype="PCM_16"))
    if flip < len(data):
        data[flip] = byte
    try:
        load_audio(bytes(data[: len(data) - cut]))
    except PronunciationInputError:
        pass


def test_undecodable_audio_message_names_no_python_object() -> None:
    from pronunciation.audio import load_audio
    from pronunciation.errors import PronunciationInputError

    with pytest.raises(PronunciationInputError) as info:
        load_audio(b"this is a text file, not audio", max_seconds=30, min_seconds=0.3)
    assert info.value.code == "audio_undecodable"
    assert " object at 0x" not in info.value.message and "<" not in info.value.message
    assert "Format not recognised" in info.value.message
