"""Timing, pause, pitch and energy features of one utterance, from its alignment.

Fluency and prosody depend less on how each phone sounds than on how the speech flows: the
experts' fluency follows pauses inside the sentence, prosody follows pauses, speech rate, pitch
range, voicing and energy variation. Pitch is a cheap autocorrelation tracker (40 ms windows,
10 ms shift, 70-450 Hz), enough for ranges and voicing, not for intonation contours.
"""

from __future__ import annotations

import numpy as np

from pronunciation.gop.mfcc import SAMPLE_RATE, frames

PAUSE_FRAMES = 10  # a between-word silence of at least 100 ms counts as a pause
VOWELS = frozenset(["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"])

UTTERANCE_FEATURES: tuple[str, ...] = (
    "speech_rate", "articulation_rate", "speech_span", "n_frames", "lead_silence", "trail_silence",
    "inner_silence", "n_pauses", "longest_pause", "pause_time", "phone_dur_cv", "short_phone_frac",
    "vowel_dur_cv", "energy_std", "energy_range", "f0_std", "f0_range", "voiced_frac", "f0_delta",
    "periodicity", "n_phones", "n_words",
)


def pitch_track(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f0 Hz, voiced flags, autocorrelation peak) per 10 ms frame."""
    window = 640
    fr = frames(audio.astype(np.float64), window=window)
    fr = (fr - fr.mean(1, keepdims=True)) * np.hanning(window)
    spec = np.fft.rfft(fr, 2048)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :window]
    ac = ac / (ac[:, :1] + 1e-9)
    lo, hi = SAMPLE_RATE // 450, SAMPLE_RATE // 70
    seg = ac[:, lo:hi]
    lag = seg.argmax(1)
    peak = seg.max(1)
    f0 = SAMPLE_RATE / (lag + lo)
    e = 10 * np.log10((fr**2).mean(1) + 1e-10)
    voiced = (peak > 0.45) & (e > e.max() - 35)
    return f0.astype(np.float32), voiced, peak.astype(np.float32)


def _cv(x: np.ndarray) -> float:
    return float(x.std() / max(1.0, x.mean())) if len(x) > 1 else 0.0


def utterance_features(
    audio: np.ndarray, phone_start: np.ndarray, phone_frames: np.ndarray, phone_names: list[str],
    silences: np.ndarray, n_words: int, energy: np.ndarray,
) -> np.ndarray:
    """UTTERANCE_FEATURES as a float32 vector.

    `silences` holds the frames of each optional silence in chain order: before the first word,
    after each word (the last one is the trailing silence).
    """
    n_frames = len(energy)
    spoken = phone_frames > 0
    start = int(phone_start[spoken].min()) if spoken.any() else 0
    end = int((phone_start + phone_frames)[spoken].max()) if spoken.any() else 1
    span = max(1, end - start)
    inner = silences[1:-1].astype(float)
    pauses = inner[inner >= PAUSE_FRAMES]
    n_ph = len(phone_frames)
    vowel = np.array([d for d, p in zip(phone_frames, phone_names) if d > 0 and p in VOWELS], float)
    e = energy[start:end]
    f0, voiced, peak = pitch_track(audio)
    v = voiced[start:end]
    lf0 = np.log(f0[start:end][v]) if v.sum() > 3 else np.zeros(4)
    return np.array([
        n_ph / span * 100, n_ph / max(1.0, span - inner.sum()) * 100, span, n_frames, silences[0], silences[-1],
        inner.sum(), len(pauses), inner.max(initial=0), pauses.sum(), _cv(phone_frames.astype(float)),
        float((phone_frames <= 3).mean()), _cv(vowel), e.std() if len(e) else 0.0,
        np.percentile(e, 90) - np.percentile(e, 10) if len(e) else 0.0, lf0.std(),
        np.percentile(lf0, 90) - np.percentile(lf0, 10), v.mean() if len(v) else 0.0,
        np.abs(np.diff(lf0)).mean() if len(lf0) > 1 else 0.0, peak[start:end].mean() if end > start else 0.0,
        n_ph, n_words,
    ], np.float32)
