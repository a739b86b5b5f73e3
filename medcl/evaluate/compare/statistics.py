"""Intervals over seeds and folds, and which metric each label kind is ranked by.

See :mod:`medcl.evaluate.compare` for the statistics (paired differences to the baseline,
t-interval over seeds, corrected resampled t over folds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "roc_auc", "continuous": "mae"}
SECONDARY_METRIC = {"binary": "balanced_accuracy", "multiclass": "balanced_accuracy", "continuous": "r2"}
_LOWER_IS_BETTER = ("mae",)


# ---------------------------------------------------------------------------------- statistics


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, df)`` of a t-interval; low/high NaN with fewer than two finite values."""
    from scipy import stats

    v = np.array([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan"), 0
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return mean, mean - half, mean + half, len(v) - 1


def corrected_fold_interval(diffs: Sequence[float], test_train_ratio: float,
                            confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Corrected resampled t-interval over (seed, fold) differences (Nadeau & Bengio 2003).

    Var = (1/J + n_test/n_train) * s^2 with J differences; df = J - 1. Returns ``(mean, low, high, df)``.
    """
    from scipy import stats

    d = np.array([x for x in diffs if np.isfinite(x)], float)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else float("nan")), float("nan"), float("nan"), 0
    j = len(d)
    half = float(stats.t.ppf(0.5 + confidence / 2, j - 1)) * math.sqrt((1 / j + test_train_ratio) * d.var(ddof=1))
    mean = float(d.mean())
    return mean, mean - half, mean + half, j - 1


def lower_is_better(metric: str) -> bool:
    """True for error metrics (MAE)."""
    return metric in _LOWER_IS_BETTER
