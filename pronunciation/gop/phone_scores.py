"""Frame-level goodness of pronunciation per aligned phone, and its competitors.

For every frame, each real phone's likelihood is the best of its 3 context-independent senones;
normalised over the 40 real phones (39 + silence) it gives the frame's phone posteriors. Per
aligned phone segment: mean and minimum log posterior of the canonical phone (LPP), GOP as the
gap between the aligned triphone state and the best phone (and the same for the CI phone), the
mean posterior of every phone (which phone it sounded like) and the mean log posterior ratio of
the canonical phone against every competitor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

MISSING = -15.0  # stands for a phone with no frames (cannot happen with a full alignment)

PHONE_SCALARS: tuple[str, ...] = ("lpp", "lpp_min", "gop_tri", "gop_ci", "log_dur", "energy")


@dataclass(frozen=True)
class FramePosteriors:
    ci_loglik: np.ndarray  # (T, n_ci) best CI-senone log-likelihood per phone
    log_post: np.ndarray  # (T, n_real) log posteriors over the real phones
    best: np.ndarray  # (T,) best real phone log-likelihood


def frame_posteriors(ci_loglik: np.ndarray, real: np.ndarray) -> FramePosteriors:
    r = ci_loglik[:, real]
    return FramePosteriors(ci_loglik, r - logsumexp(r, axis=1, keepdims=True), r.max(1))


def segment_scores(
    frames: np.ndarray, ci: int, real_index: int, post: FramePosteriors, aligned_loglik: np.ndarray,
    energy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scalars per PHONE_SCALARS, mean posteriors (n_real,), mean log ratios (n_real,)) of one phone."""
    n_real = post.log_post.shape[1]
    if len(frames) == 0:
        return (np.array([MISSING] * 4 + [0.0, 0.0], np.float32), np.zeros(n_real, np.float32),
                np.full(n_real, 10.0, np.float32))
    lp = post.log_post[frames]
    own = lp[:, real_index]
    best = post.best[frames]
    scalars = np.array([
        own.mean(), own.min(), (aligned_loglik[frames] - best).mean(),
        (post.ci_loglik[frames, ci] - best).mean(), np.log(len(frames)), energy[frames].mean(),
    ], np.float32)
    return scalars, np.exp(lp).mean(0).astype(np.float32), (own[:, None] - lp).mean(0).astype(np.float32)
