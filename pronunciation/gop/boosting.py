"""The gradient-boosting stack: phone -> word -> sentence, trained on speaker-grouped
out-of-fold predictions so each level learns from the errors the level below makes on unseen
speakers (not from its near-perfect fit on the training speakers).

Deterministic: HistGradientBoosting without subsampling or early stopping, GroupKFold splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pronunciation.gop.features import UtteranceFeatures
from pronunciation.gop.head_features import (
    PHONE_ID_COLUMN,
    add_phone_zscores,
    phone_rows,
    phone_stats,
    sentence_row,
    word_rows,
)
from pronunciation.gop.targets import (
    SENTENCE_TARGETS,
    WORD_TARGETS,
    phone_targets,
    sentence_targets,
    word_targets,
)

N_CI = 42  # codebooks (CI phones) of the en-US model
FOLDS = 5


@dataclass(frozen=True)
class BoostingSettings:
    phone_iterations: int = 400
    upper_iterations: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0


def _model(cfg: BoostingSettings, iterations: int, categorical: list[int] | None = None):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=iterations, learning_rate=cfg.learning_rate, max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization,
        categorical_features=categorical, early_stopping=False, random_state=0,
    )


def _fit(cfg, iterations, categorical, x, y):
    """One OpenMP thread, whatever OMP_NUM_THREADS or the core count say: the boosting's parallel
    sums would otherwise add in a thread-dependent order, and the same data would give a head that
    differs in the last bits on another machine (parallelism comes from fitting folds in processes)."""
    from threadpoolctl import threadpool_limits

    # The model first: building it imports sklearn, which loads its OpenMP runtime; a limit set
    # before that (the first fit in a fresh pool worker) would not reach the runtime at all.
    model = _model(cfg, iterations, categorical)
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit(x, y)


def _fit_predict(cfg, iterations, categorical, x, y, x_out):
    return _fit(cfg, iterations, categorical, x, y).predict(x_out)


def _fit_oof(cfg, iterations, x, y, groups, categorical=None, pool=None):
    """(out-of-fold predictions, model fitted on everything); the folds run in `pool` when given.

    Each fit is deterministic, so running them in parallel gives the same models as in sequence."""
    from sklearn.model_selection import GroupKFold

    folds = list(GroupKFold(FOLDS).split(x, y, groups))
    if pool is None:
        parts = [_fit_predict(cfg, iterations, categorical, x[tr], y[tr], x[va]) for tr, va in folds]
        full = _fit(cfg, iterations, categorical, x, y)
    else:
        futures = [pool.submit(_fit_predict, cfg, iterations, categorical, x[tr], y[tr], x[va]) for tr, va in folds]
        full_future = pool.submit(_fit, cfg, iterations, categorical, x, y)
        parts = [f.result() for f in futures]
        full = full_future.result()
    oof = np.zeros(len(y), np.float32)
    for (_, va), p in zip(folds, parts, strict=True):
        oof[va] = p
    return oof, full


@lru_cache(maxsize=1)
def _openmp_controller():
    """threadpoolctl's view of the loaded OpenMP runtimes, taken once (after sklearn is imported,
    as it is by the time a stack exists): building one per call costs ~2 ms, limiting through it
    ~0.05 ms."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@dataclass
class BoostingStack:
    stats: np.ndarray  # per-phone z-score statistics
    phone: object
    word: dict[str, object]
    sentence: dict[str, object]

    def predict(self, f: UtteranceFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(phone accuracy (P,), word (W, 3), sentence (5,)) on the corpus's scales.

        One utterance walks ~2,800 trees, each an OpenMP parallel region over a handful of rows:
        on a busy machine every region waits for a second thread to be scheduled (measured with
        three busy processes on 2 cores: 8.0 s for 6 utterances, 0.48 s with one thread; unloaded
        the same wall time at half the CPU). So prediction runs on one OpenMP thread, scoped to
        this call and this thread (a torch engine in the same process keeps its own setting)."""
        with _openmp_controller().limit(limits=1, user_api="openmp"):
            return self._predict(f)

    def _predict(self, f: UtteranceFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = add_phone_zscores(phone_rows(f), self.stats)
        pp = self.phone.predict(rows)
        wr = word_rows(f, rows, pp)
        wp = np.column_stack([self.word[k].predict(wr) for k in WORD_TARGETS])
        sr = sentence_row(f, rows, pp, wp[:, 0])[None]
        sp = np.array([self.sentence[k].predict(sr)[0] for k in SENTENCE_TARGETS])
        return pp, wp, sp


def train_stack(
    feats: list[UtteranceFeatures], labels: list[dict], speakers: list[str], cfg: BoostingSettings = BoostingSettings(),
    log=print, pool=None,
) -> BoostingStack:
    """Fit the three levels on parallel lists of features, expert labels and speaker ids."""
    rows = [phone_rows(f) for f in feats]
    stats = phone_stats(np.vstack(rows), N_CI)
    rows = [add_phone_zscores(r, stats) for r in rows]
    x = np.vstack(rows)
    y = np.concatenate([phone_targets(lab) for lab in labels])
    utt = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
    groups = np.array(speakers)[utt]
    log(f"phone level: {len(y)} phones")
    pp, phone_model = _fit_oof(cfg, cfg.phone_iterations, x, y, groups, categorical=[PHONE_ID_COLUMN], pool=pool)
    per_utt_pp = np.split(pp, np.cumsum([len(r) for r in rows])[:-1])
    wr = [word_rows(f, r, p) for f, r, p in zip(feats, rows, per_utt_pp, strict=True)]
    wx = np.vstack(wr)
    wy = np.vstack([word_targets(lab) for lab in labels])
    wg = np.array(speakers)[np.concatenate([np.full(len(r), i) for i, r in enumerate(wr)])]
    log(f"word level: {len(wy)} words")
    word_models, word_oof = {}, {}
    for k, name in enumerate(WORD_TARGETS):
        word_oof[name], word_models[name] = _fit_oof(cfg, cfg.upper_iterations, wx, wy[:, k], wg, pool=pool)
    per_utt_wa = np.split(word_oof["accuracy"], np.cumsum([len(r) for r in wr])[:-1])
    sx = np.vstack([sentence_row(f, r, p, w) for f, r, p, w in zip(feats, rows, per_utt_pp, per_utt_wa, strict=True)])
    sy = np.vstack([sentence_targets(lab) for lab in labels])
    log(f"sentence level: {len(sy)} utterances")
    # top level: no OOF needed
    if pool is None:
        sent_models = {name: _fit(cfg, cfg.upper_iterations, None, sx, sy[:, k]) for k, name in enumerate(SENTENCE_TARGETS)}
    else:
        futures = {name: pool.submit(_fit, cfg, cfg.upper_iterations, None, sx, sy[:, k])
                   for k, name in enumerate(SENTENCE_TARGETS)}
        sent_models = {name: f.result() for name, f in futures.items()}
    return BoostingStack(stats=stats, phone=phone_model, word=word_models, sentence=sent_models)
