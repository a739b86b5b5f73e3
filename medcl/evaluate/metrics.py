"""What a probe measures and how its result is kept: metric functions, summaries, the result record.

:func:`classification_metrics` / :func:`regression_metrics` score one fold; :class:`MetricSummary`
summarises a metric over folds (mean, sd, 95% t-interval); :class:`ProbeResult` is what
:func:`medcl.evaluate.probe.probe_features` returns and :func:`write_probe_result` stores it
(``probe/<label>.json`` and ``.csv`` in a run directory). Fine-tuning reuses the metric functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcl.atomic import json_safe

CLASSIFICATION_METRICS: tuple[str, ...] = ("roc_auc", "balanced_accuracy", "accuracy")
REGRESSION_METRICS: tuple[str, ...] = ("mae", "r2")


@dataclass(frozen=True)
class MetricSummary:
    """One metric over the outer folds: mean, standard deviation and a 95% t-interval."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n_folds: int
    per_fold: list[float] = field(default_factory=list)

    @classmethod
    def from_folds(cls, values: Sequence[float], confidence: float = 0.95) -> MetricSummary:
        """Summarise per-fold values; NaN folds (metric undefined there) are left out."""
        from scipy import stats

        all_values = [float(v) for v in values]
        v = np.array([x for x in all_values if np.isfinite(x)], dtype=float)
        k = len(v)
        if k == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, 0, all_values)
        mean = float(v.mean())
        if k == 1:
            return cls(mean, float("nan"), float("nan"), float("nan"), 1, all_values)
        std = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, df=k - 1)) * std / math.sqrt(k)
        return cls(mean, std, mean - half, mean + half, k, all_values)


@dataclass
class ProbeResult:
    """Outcome of :func:`probe_features`.

    ``rows`` holds one entry per (probe, training size, metric): ``probe`` ("linear" / "knn"),
    ``train_size`` ("all" or a number of training patients), ``n_train`` (mean training subjects
    per fold), ``metric`` and its :class:`MetricSummary` fields.
    """

    kind: str
    n_subjects: int
    n_patients: int
    n_folds: int
    metric_names: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str, probe: str = "linear", train_size: int | str = "all") -> MetricSummary:
        """The summary of one metric, e.g. ``result.metric("roc_auc").mean``."""
        for row in self.rows:
            if row["probe"] == probe and row["train_size"] == train_size and row["metric"] == name:
                keys = MetricSummary.__dataclass_fields__
                return MetricSummary(**{k: row[k] for k in keys})
        raise KeyError(f"no result for metric={name!r}, probe={probe!r}, train_size={train_size!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return json_safe(asdict(self))

    def to_frame(self):
        """One row per (probe, train_size, metric) as a pandas DataFrame (per-fold values dropped)."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in r.items() if k != "per_fold"} for r in self.rows])

    def table(self) -> str:
        """A plain-text table for the terminal."""
        header = f"{'probe':<7} {'train':>6} {'n_train':>8} {'metric':<18} {'mean':>7} {'std':>7}  95% CI"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            ci = "n/a" if not np.isfinite(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            lines.append(
                f"{r['probe']:<7} {r['train_size']!s:>6} {r['n_train']:>8.1f} {r['metric']:<18} "
                f"{r['mean']:>7.3f} {r['std']:>7.3f}  {ci}"
            )
        return "\n".join(lines)


def macro_ovr_auc(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    aucs = []
    for c in range(proba.shape[1]):
        pos = y == c
        if pos.any() and (~pos).any():
            aucs.append(roc_auc_score(pos, proba[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(y: np.ndarray, proba: np.ndarray, kind: str) -> dict[str, float]:
    """ROC-AUC (binary; macro one-vs-rest for multiclass), balanced accuracy and accuracy.

    ``y``: (n,) class codes; ``proba``: (n, K) class probabilities (binary: K = 2). A metric
    that is undefined on these labels (e.g. AUC with one class present) is NaN.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    y = np.asarray(y).astype(np.int64)
    pred = np.argmax(proba, axis=1)
    if kind == "binary":
        auc = float(roc_auc_score(y, proba[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    else:
        auc = macro_ovr_auc(y, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        bacc = float(balanced_accuracy_score(y, pred))
    return {"roc_auc": auc, "balanced_accuracy": bacc, "accuracy": float(accuracy_score(y, pred))}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Mean absolute error and R² (NaN when ``y`` is constant)."""
    from sklearn.metrics import mean_absolute_error, r2_score

    r2 = float(r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else float("nan")
    return {"mae": float(mean_absolute_error(y, pred)), "r2": r2}


def write_probe_result(
    result: ProbeResult, out_dir: str | Path, label: str, *, name: str | None = None, **extra: Any
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name or label>.json`` and ``.csv`` atomically; returns both paths."""
    from medcl.atomic import atomic_path, write_json

    out_dir = Path(out_dir)
    name = name or label
    data = {"label": label, **json_safe(extra), **result.to_dict()}
    json_path = write_json(out_dir / f"{name}.json", data)
    csv_path = out_dir / f"{name}.csv"
    frame = result.to_frame()
    frame.insert(0, "label", label)
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    return json_path, csv_path
