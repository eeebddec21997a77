"""Decode, validate and resample a learner's recording into what Qwen2-Audio takes.

Qwen2-Audio's feature extractor wants 16 kHz mono float32, and its encoder sees at most 30 s: a
longer clip would be cut without a word, and the scores would describe half a sentence. So
everything a learner may upload goes through `load_audio`, which either returns clean 16 kHz
samples or raises one of four PronunciationInputError codes the LMS can show:

- audio_undecodable: not audio soundfile can read (garbage, empty, unsupported, NaN/inf samples,
  absurd sample rates);
- audio_too_short / audio_too_long: outside [min_seconds, max_seconds];
- audio_silent: no frame carries speech-level energy (see `speech_level_dbfs`).

Decoding uses libsndfile through soundfile (WAV, FLAC, OGG Vorbis/Opus, MP3 where the bundled
libsndfile has it); resampling uses soxr. No input makes it raise anything else.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import soundfile as sf
import soxr

from pronunciation.errors import (
    AudioSilentError,
    AudioTooLongError,
    AudioTooShortError,
    AudioUndecodableError,
)

TARGET_SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64

FRAME_SECONDS = 0.03
LOUD_FRAMES = 5
SILENCE_DBFS = -50.0
"""Speech level (see `speech_level_dbfs`) below which a clip counts as silent.

On the 600 speechocean762 sample clips the level ranges from -35 to -9 dBFS (median -18), so
-50 leaves 15 dB for quiet microphones while 16-bit digital silence (-inf), dither and faint
line noise (-60 dBFS and below) fail.
"""


def load_audio(
    data: bytes,
    *,
    max_seconds: float = 30.0,
    min_seconds: float = 0.3,
    silence_dbfs: float = SILENCE_DBFS,
) -> np.ndarray:
    """Decode `data` to float32 mono at 16 kHz, or raise an audio PronunciationInputError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioUndecodableError(f"expected audio bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise AudioUndecodableError("the audio is empty (0 bytes)")
    mono, rate = _decode(raw, max_seconds)
    seconds = mono.size / rate
    if seconds < min_seconds:
        raise AudioTooShortError(
            f"the audio lasts {seconds:.2f} s; at least {min_seconds:g} s is needed"
        )
    if seconds > max_seconds:
        raise AudioTooLongError(
            f"the audio lasts {seconds:.2f} s; at most {max_seconds:g} s fits the model"
        )
    if rate != TARGET_SAMPLE_RATE:
        mono = soxr.resample(mono, rate, TARGET_SAMPLE_RATE, quality="HQ").astype(np.float32)
    level = speech_level_dbfs(mono, TARGET_SAMPLE_RATE)
    if level < silence_dbfs:
        shown = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise AudioSilentError(
            f"the audio is silent: its loudest speech is {shown} dBFS, "
            f"below the {silence_dbfs:g} dBFS threshold"
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode(raw: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Read mono float32 samples (channels averaged) and the sample rate.

    Reads in 100 ms blocks and stops one frame past max_seconds: headers can lie about length
    and channel count, and a hostile file must not make us allocate more than its real
    content (bounded by max_seconds) needs.
    """
    try:
        with sf.SoundFile(_ClampedBytesIO(raw)) as f:
            rate = int(f.samplerate)
            channels = int(f.channels)
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise AudioUndecodableError(
                    f"unsupported sample rate {rate} Hz "
                    f"(accepted {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)"
                )
            if not 1 <= channels <= MAX_CHANNELS:
                raise AudioUndecodableError(
                    f"the audio has {channels} channels (accepted 1..{MAX_CHANNELS})"
                )
            limit = int(math.floor(max_seconds * rate)) + 1
            block = max(1, rate)  # 1 s blocks: each read crosses cffi into Python file callbacks
            parts: list[np.ndarray] = []
            total = 0
            while total < limit:
                chunk = f.read(frames=min(block, limit - total), dtype="float32", always_2d=True)
                if chunk.shape[0] == 0:
                    break
                if not np.isfinite(chunk).all():
                    raise AudioUndecodableError("the audio contains NaN or infinite samples")
                parts.append(chunk.mean(axis=1, dtype=np.float64).astype(np.float32))
                total += chunk.shape[0]
    except AudioUndecodableError:
        raise
    except Exception as exc:  # libsndfile/soundfile raise several types for bad input
        raise AudioUndecodableError(f"the audio cannot be decoded: {_describe(exc)}") from exc
    if total >= limit:
        raise AudioTooLongError(
            f"the audio lasts more than {max_seconds:g} s; at most {max_seconds:g} s fits the model"
        )
    mono = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return mono, rate


class _ClampedBytesIO(io.BytesIO):
    """BytesIO whose seek to a negative position stays put instead of raising.

    libsndfile calls seek through a cffi callback, where a Python exception cannot propagate:
    cffi prints a traceback to stderr and libsndfile goes on. Corrupt headers ask for negative
    offsets; staying put lets libsndfile see the failed seek and report the file as bad.
    """

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: len(self.getbuffer())}
        if base.get(whence, 0) + offset < 0:
            return self.tell()
        return super().seek(offset, whence)


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-f]+>")


def _describe(exc: Exception) -> str:
    """libsndfile's reason without the Python object repr it names the file by (`Error opening
    <..._ClampedBytesIO object at 0x...>: Format not recognised.` -> `Error opening: Format not ...`)."""
    text = _OBJECT_REPR.sub("", str(exc)).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


def speech_level_dbfs(samples: np.ndarray, sample_rate: int) -> float:
    """The speech level of a mono clip: RMS (dBFS) of its LOUD_FRAMES-th loudest 30 ms frame.

    Taking the 5th loudest frame rather than the loudest ignores a few clicks or pops in
    otherwise silent audio (they need 150 ms of energy to count), while 150 ms of any spoken
    syllable anywhere in 30 s is enough to pass. The mean is removed first so a DC offset does
    not pass for speech. Returns -inf for digital silence.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    x = x - x.mean()
    frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
    n = max(1, x.size // frame)
    frames = x[: n * frame].reshape(n, -1) if x.size >= frame else x.reshape(1, -1)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    k = min(LOUD_FRAMES, rms.size)
    level = float(np.partition(rms, rms.size - k)[rms.size - k])
    return 20.0 * math.log10(level) if level > 0 else -math.inf
