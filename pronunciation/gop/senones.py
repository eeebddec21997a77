"""Per-frame senone log-likelihoods under the PTM model, vectorised with numpy.

Every Gaussian of every codebook is evaluated once per frame as one matrix product per stream
(the expanded quadratic form), then each requested senone mixes its codebook's densities with
its own weights. Only the senones an utterance needs are mixed.
"""

from __future__ import annotations

import numpy as np

from pronunciation.gop.model_files import AcousticModel


def gaussian_loglik(am: AcousticModel, feats: np.ndarray) -> np.ndarray:
    """(T, stream, codebook, density) log densities of (T, stream, dim) features.

    log N = gconst - 0.5 * sum(iv * (x - mu)^2) is one product of [x^2, x, 1] with a matrix
    precomputed per model (`AcousticModel.quadratic`), one matmul per stream.
    """
    t = len(feats)
    n_cb, n_st, n_d, _dim = am.means.shape
    out = np.empty((t, n_st, n_cb * n_d), np.float32)
    ones = np.ones((t, 1), np.float32)
    for s in range(n_st):
        x = feats[:, s]
        np.matmul(np.hstack([x * x, x, ones]), am.quadratic[s], out=out[:, s])
    return out.reshape(t, n_st, n_cb, n_d)


def senone_loglik(am: AcousticModel, gauss: np.ndarray, senones: np.ndarray) -> np.ndarray:
    """(T, len(senones)) log-likelihoods: sum over streams of log sum_d w_d N_d."""
    top = gauss.max(-1)  # (T, stream, cb)
    scaled = np.exp(gauss - top[..., None])  # (T, stream, cb, dens)
    cb = am.mdef.senone_base[senones]
    weights = np.exp(am.log_weights[:, :, senones])  # (stream, dens, S)
    out = np.zeros((len(gauss), len(senones)), np.float32)
    for c in np.unique(cb):  # group senones by codebook: one small matmul per codebook and stream
        cols = np.flatnonzero(cb == c)
        for s in range(scaled.shape[1]):
            mix = scaled[:, s, c] @ weights[s][:, cols]
            out[:, cols] += np.log(mix + 1e-30) + top[:, s, c][:, None]
    return out
