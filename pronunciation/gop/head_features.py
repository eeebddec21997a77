"""Feature rows for the head at its three levels: phone, word (given phone predictions) and
sentence (given phone and word predictions). Used identically in training and scoring, so the
two cannot drift apart.

Phone rows carry the phone's own GOP scalars, its identity and position, its neighbours' and
utterance's GOP, the posteriors/ratios against every competing phone, and the GOP scalars
z-normalised per phone identity (statistics from the training set, shipped with the head).
"""

from __future__ import annotations

import numpy as np

from pronunciation.gop.features import UtteranceFeatures
from pronunciation.gop.phone_scores import MISSING

N_GOP = 5  # lpp, lpp_min, gop_tri, gop_ci, log_dur: the scalars z-normalised per phone identity
PHONE_ID_COLUMN = N_GOP  # categorical column (the CI phone index)


def phone_rows(f: UtteranceFeatures) -> np.ndarray:
    """(P, n) phone feature rows (without the per-phone z-scores, see `add_phone_zscores`)."""
    s = f.scalars
    lpp, gop = s[:, 0], s[:, 2]
    empty = f.phone_frames == 0
    lpp = np.where(empty, MISSING, lpp)
    n = len(lpp)
    word_len = np.bincount(f.word_of_phone)[f.word_of_phone]
    word_lpp = (np.bincount(f.word_of_phone, lpp) / np.bincount(f.word_of_phone))[f.word_of_phone]
    prev = np.r_[0.0, lpp[:-1]]
    nxt = np.r_[lpp[1:], 0.0]
    ulpp, ugop = lpp.mean(), gop.mean()
    base = np.column_stack([
        s[:, :N_GOP], f.phone_ids, f.pos_in_word, word_len, f.pos_in_word == word_len - 1,
        prev, nxt, word_lpp, np.full(n, ulpp), np.full(n, ugop), lpp - ulpp, gop - ugop,
        np.where(empty, 0.0, s[:, 5] - f.mean_energy), np.log1p(f.silence_after),
    ])
    return np.hstack([base, f.posteriors, f.log_ratios]).astype(np.float32)


def phone_stats(rows: np.ndarray, n_phones: int) -> np.ndarray:
    """(n_phones, 2, N_GOP) mean and sd of the GOP scalars per phone identity."""
    out = np.zeros((n_phones, 2, N_GOP), np.float32)
    out[:, 1] = 1.0
    ids = rows[:, PHONE_ID_COLUMN].astype(int)
    for p in range(n_phones):
        m = ids == p
        if m.sum() > 5:
            out[p, 0] = rows[m, :N_GOP].mean(0)
            out[p, 1] = rows[m, :N_GOP].std(0) + 1e-3
    return out


def add_phone_zscores(rows: np.ndarray, stats: np.ndarray) -> np.ndarray:
    ids = rows[:, PHONE_ID_COLUMN].astype(int)
    z = (rows[:, :N_GOP] - stats[ids, 0]) / stats[ids, 1]
    return np.hstack([rows, z]).astype(np.float32)


def word_rows(f: UtteranceFeatures, rows: np.ndarray, phone_pred: np.ndarray) -> np.ndarray:
    """(W, n) word rows from the utterance's phone rows and phone predictions."""
    out = []
    for w in range(int(f.word_of_phone.max()) + 1):
        m = f.word_of_phone == w
        x, p = rows[m], phone_pred[m]
        srt = np.sort(p)
        out.append([
            p.mean(), p.min(), p.max(), srt[1] if len(p) > 1 else p[0], x[:, 0].mean(), x[:, 0].min(),
            x[:, 2].mean(), x[:, 2].min(), m.sum(), f.phone_frames[m].sum(), (f.phone_frames[m] == 0).sum(),
            x[0, 12], x[0, 13], np.log1p(f.silence_after[m][-1]), w, f.word_of_phone.max() + 1,
        ])
    return np.array(out, np.float32)


def sentence_row(f: UtteranceFeatures, rows: np.ndarray, phone_pred: np.ndarray, word_pred: np.ndarray) -> np.ndarray:
    """(n,) sentence row: prediction summaries, GOP summaries, timing/pitch/energy."""
    p, w = phone_pred, word_pred
    return np.r_[
        p.mean(), p.min(), p.std(), np.percentile(p, 10), (p < 1.5).mean(), (p < 1).mean(),
        w.mean(), w.min(), w.std(), rows[:, 0].mean(), rows[:, 2].mean(), np.percentile(rows[:, 0], 10),
        f.utterance,
    ].astype(np.float32)
