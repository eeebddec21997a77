"""Sphinx-style front end: 13 MFCC (25 mel filters 130-6800 Hz, 25.625 ms Hamming window, 10 ms
shift), batch cepstral mean normalisation, deltas and double deltas (the model's `1s_c_d_dd`).

The parameters mirror the model's `feat.params`, so the model's Gaussians see the features they
were trained on.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16000
WINDOW = 410
SHIFT = 160
NFFT = 512


@lru_cache(maxsize=1)
def _mel_filterbank(nfilt: int = 25, lo: float = 130.0, hi: float = 6800.0) -> np.ndarray:
    def mel(f):
        return 2595 * np.log10(1 + f / 700.0)

    def imel(m):
        return 700 * (10 ** (m / 2595.0) - 1)

    pts = imel(np.linspace(mel(lo), mel(hi), nfilt + 2))
    freqs = np.arange(NFFT // 2 + 1) * SAMPLE_RATE / NFFT
    fb = np.zeros((nfilt, NFFT // 2 + 1))
    for i in range(nfilt):
        left, centre, right = pts[i], pts[i + 1], pts[i + 2]
        up = (freqs - left) / (centre - left)
        down = (right - freqs) / (right - centre)
        fb[i] = np.maximum(0, np.minimum(up, down)) * 2 / (right - left)
    return fb


_LIFTER = 1 + 11 * np.sin(np.arange(13) * np.pi / 22)


def frames(x: np.ndarray, window: int = WINDOW, shift: int = SHIFT) -> np.ndarray:
    """(n_frames, window) strided view of x (at least one frame; short input is zero padded)."""
    if len(x) < window:
        x = np.pad(x, (0, window - len(x)))
    n = 1 + (len(x) - window) // shift
    return np.lib.stride_tricks.sliding_window_view(x, window)[::shift][:n]


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Log mel energies (T, 25) of 16 kHz float audio in [-1, 1] (int16 scale inside)."""
    x = audio.astype(np.float64) * 32768.0
    x = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    fr = frames(x) * np.hamming(WINDOW)
    power = np.abs(np.fft.rfft(fr, NFFT)) ** 2
    return np.log(np.maximum(power @ _mel_filterbank().T, 1e-5))


def features(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3 streams, 13) model features and the (T, 25) log mel energies they came from."""
    mel = log_mel(audio)
    c = dct(mel, type=2, norm="ortho", axis=1)[:, :13] * _LIFTER
    c = c - c.mean(0)
    t = len(c)
    p = np.pad(c, ((3, 3), (0, 0)), mode="edge")
    d = p[5 : 5 + t] - p[1 : 1 + t]
    dd = (p[6 : 6 + t] - p[2 : 2 + t]) - (p[4 : 4 + t] - p[0:t])
    return np.stack([c, d, dd], 1).astype(np.float32), mel
