"""Evaluation metrics of the paper (section 3.2): PCC, SCC and RMSE between predicted and gold.

Correlations are undefined when either side is constant or there are fewer than two pairs; the
paper reports completeness as NaN for exactly this reason (almost every gold score is 10).
`evaluate` returns NaN there with the reason stated, rather than letting scipy warn or raise,
so an evaluation run over all aspects always finishes and the report says why a cell is empty.

scipy is imported on first use: it belongs to the `ml` extra, and importing this module should
not require it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict


class Metric(BaseModel):
    """PCC, SCC, RMSE over n pairs; `reason` says why a correlation is NaN (None when defined)."""

    model_config = ConfigDict(frozen=True)

    pcc: float
    scc: float
    rmse: float
    n: int
    reason: str | None = None


def _arrays(pred: Sequence[float], gold: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    g = np.asarray(gold, dtype=np.float64).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"{p.size} predictions but {g.size} gold scores")
    if not (np.isfinite(p).all() and np.isfinite(g).all()):
        raise ValueError("scores must be finite numbers")
    return p, g


def undefined_reason(pred: Sequence[float], gold: Sequence[float]) -> str | None:
    """Why PCC/SCC cannot be computed for these pairs, or None when they can."""
    p, g = _arrays(pred, gold)
    if p.size < 2:
        return f"n={p.size}: correlation needs at least 2 pairs"
    if np.ptp(g) == 0:
        return f"gold scores are constant (all {g[0]:g})"
    if np.ptp(p) == 0:
        return f"predictions are constant (all {p[0]:g})"
    return None


def pcc(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Pearson correlation; NaN when undefined (see `undefined_reason`)."""
    if undefined_reason(pred, gold) is not None:
        return math.nan
    from scipy.stats import pearsonr

    return float(pearsonr(pred, gold)[0])


def scc(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman rank correlation; NaN when undefined (see `undefined_reason`)."""
    if undefined_reason(pred, gold) is not None:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(pred, gold)[0])


def rmse(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Root mean square error; NaN for no pairs."""
    p, g = _arrays(pred, gold)
    if p.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((p - g) ** 2)))


def evaluate(pred: Sequence[float], gold: Sequence[float]) -> Metric:
    """All three metrics for one aspect, NaN-safe, with the reason when correlations are NaN."""
    reason = undefined_reason(pred, gold)
    n = len(_arrays(pred, gold)[0])
    if reason is not None:
        return Metric(pcc=math.nan, scc=math.nan, rmse=rmse(pred, gold), n=n, reason=reason)
    return Metric(pcc=pcc(pred, gold), scc=scc(pred, gold), rmse=rmse(pred, gold), n=n)
