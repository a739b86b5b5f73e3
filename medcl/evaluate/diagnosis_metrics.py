"""Test metrics of a diagnosis model: point values with patient-level bootstrap 95 % intervals.

Binary labels: ROC AUC, balanced accuracy, sensitivity and specificity at the decision threshold
chosen on the validation split (:func:`youden_threshold`), Brier score and expected calibration
error (ECE, 10 equal-width bins) with the reliability table. Multiclass: macro one-vs-rest AUC,
balanced accuracy (arg max), Brier and top-label ECE. Continuous: MAE and R². Intervals resample
*patients* with replacement (all scans of a drawn patient go in together), so two scans of one
patient never count as independent evidence.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medcl.errors import MedclInputError

N_CALIBRATION_BINS = 10


def youden_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, str | None]:
    """The probability threshold maximising sensitivity + specificity - 1 (Youden's J) on ``(y, p)``.

    Ties take the highest threshold. Returns ``(threshold, note)``; with a single class in ``y``
    the threshold is 0.5 and the note says why.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return 0.5, "the validation split has a single class: decision threshold 0.5"
    fpr, tpr, thresholds = roc_curve(y, np.asarray(p, dtype=np.float64))
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = int(np.argmax(j))  # roc_curve lists thresholds in decreasing order: first = highest
    return float(min(thresholds[best], 1.0)), None


def _binary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = y.astype(int)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else math.nan
    spec = float((~pred[neg]).mean()) if neg.any() else math.nan
    return {
        "roc_auc": float(roc_auc_score(y, p)) if pos.any() and neg.any() else math.nan,
        "balanced_accuracy": float(np.nanmean([sens, spec])) if pos.any() or neg.any() else math.nan,
        "sensitivity": sens,
        "specificity": spec,
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "ece": calibration_table(y, p)["ece"],
    }


def _multiclass(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score

    from medcl.evaluate.metrics import macro_ovr_auc

    y = y.astype(int)
    onehot = np.eye(proba.shape[1])[y]
    top = proba.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        bacc = float(balanced_accuracy_score(y, top))
    return {
        "roc_auc": macro_ovr_auc(y, proba),
        "balanced_accuracy": bacc,
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
        "ece": calibration_table((top == y).astype(int), proba.max(axis=1))["ece"],
    }


def _continuous(y: np.ndarray, value: np.ndarray) -> dict[str, float]:
    from medcl.evaluate.metrics import regression_metrics

    return regression_metrics(y, value)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = N_CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability data: per equal-width bin of ``p``, mean predicted probability, observed rate, count.

    ``ece`` is the count-weighted mean |observed - predicted| over non-empty bins.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        if n:
            predicted, observed = float(p[inside].mean()), float(y[inside].mean())
            ece += n / len(p) * abs(observed - predicted)
        else:
            predicted = observed = math.nan
        rows.append({"low": b / bins, "high": (b + 1) / bins, "predicted": predicted, "observed": observed, "n": n})
    return {"bins": rows, "ece": float(ece) if len(p) else math.nan}


def point_metrics(kind: str, y: np.ndarray, outputs: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """The metrics of one prediction set. ``outputs``: the model's (n, K) probabilities or (n, 1) values."""
    y = np.asarray(y, dtype=float)
    outputs = np.asarray(outputs, dtype=np.float64)
    if kind == "binary":
        return _binary(y, outputs[:, 1], 0.5 if threshold is None else threshold)
    if kind == "multiclass":
        return _multiclass(y, outputs)
    if kind == "continuous":
        return _continuous(y, outputs[:, 0])
    raise MedclInputError(f"unknown label kind {kind!r}")


def patient_bootstrap(
    statistic: Callable[[np.ndarray], dict[str, float]],
    groups: Sequence[str] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Percentile intervals of ``statistic(rows)`` over patient-level resamples.

    ``statistic`` maps an index array (rows of the test set, repeats allowed) to named values; each
    resample draws as many patients as there are, with replacement, and takes all their rows.
    Returns ``{name: {"value", "low", "high", "n_boot"}}`` (``value`` on all rows; ``n_boot`` counts
    the resamples where the value was defined, e.g. both classes present for AUC).
    """
    groups = np.asarray(groups).astype(str)
    patients, inverse = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == k) for k in range(len(patients))]
    point = statistic(np.arange(len(groups)))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(n_boot):
        chosen = rng.integers(0, len(patients), len(patients))
        values = statistic(np.concatenate([rows_of[k] for k in chosen]))
        for name, v in values.items():
            if math.isfinite(v):
                draws[name].append(v)
    alpha = (1 - confidence) / 2
    out = {}
    for name, value in point.items():
        d = np.asarray(draws[name])
        low, high = (np.quantile(d, [alpha, 1 - alpha]) if len(d) else (math.nan, math.nan))
        out[name] = {"value": value, "low": float(low), "high": float(high), "n_boot": len(d)}
    return out


def diagnosis_metrics(
    kind: str,
    y: np.ndarray,
    outputs: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Test metrics with patient-level bootstrap 95 % intervals, plus the reliability table.

    Returns ``{"metrics": {name: {"value", "low", "high", "n_boot"}}, "reliability": {...} | None,
    "n": scans, "n_patients": patients}``.
    """
    y = np.asarray(y, dtype=float)
    outputs = np.asarray(outputs, dtype=np.float64)
    if len(y) != len(outputs) or len(y) != len(groups):
        raise MedclInputError(f"{len(y)} labels, {len(outputs)} predictions and {len(groups)} patient ids differ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics of degenerate resamples are NaN, skipped
        metrics = patient_bootstrap(
            lambda rows: point_metrics(kind, y[rows], outputs[rows], threshold), groups, n_boot=n_boot, seed=seed
        )
    if kind == "binary":
        reliability = calibration_table(y, outputs[:, 1])
    elif kind == "multiclass":
        reliability = calibration_table((outputs.argmax(axis=1) == y).astype(int), outputs.max(axis=1))
    else:
        reliability = None
    return {
        "metrics": metrics,
        "reliability": reliability,
        "n": len(y),
        "n_patients": len(np.unique(np.asarray(groups).astype(str))),
    }
