"""Probing a frozen encoder: scikit-learn models on its features, patient-level cross-validation.

The core, :func:`probe_features`, works on arrays (features, labels, patient ids) so it serves
the CLI, the demo and users' own scripts alike. :func:`medcl.evaluate.probe_run.probe_run` encodes a
manifest's cohort with a run's encoder once (no augmentation) and probes it.

For each outer fold (patient-level, never splitting a patient):

* classification (binary / multiclass): ``Pipeline(StandardScaler, LogisticRegression)`` with ``C``
  chosen by an inner, patient-grouped cross-validation on balanced accuracy; metrics ROC-AUC
  (macro one-vs-rest for multiclass), balanced accuracy and accuracy;
* continuous: ``Pipeline(StandardScaler, Ridge)`` with ``alpha`` chosen the same way on MAE;
  metrics MAE and R².

Each metric is summarised over folds by its mean, standard deviation and a 95% t-interval. A
label-efficiency curve repeats the linear probe with only ``n`` training patients per fold
(subsampled with a seed), and an optional k-nearest-neighbour probe gives a non-linear reading.

Why this size: one cross-validation procedure (input checks, patient folds, inner model
selection, label-efficiency subsampling, summary) whose steps share private conventions; the
metrics and the result record are in :mod:`medcl.evaluate.metrics`, the run-level entry point in
:mod:`medcl.evaluate.probe_run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import numpy as np

from medcl.atomic import json_safe
from medcl.errors import MedclInputError
from medcl.evaluate.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    MetricSummary,
    ProbeResult,
    classification_metrics,
    regression_metrics,
)

LabelKind = Literal["binary", "multiclass", "continuous"]
LABEL_KINDS: tuple[str, ...] = ("binary", "multiclass", "continuous")
DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_NEIGHBORS: tuple[int, ...] = (5, 10, 20)


# ---------------------------------------------------------------------------------------------
# Inputs and folds
# ---------------------------------------------------------------------------------------------


def _check_inputs(
    features: np.ndarray, labels: np.ndarray, groups: Sequence[Any], kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Validate shapes, drop subjects with a missing label; return (X, y, group codes, n_dropped)."""
    if kind not in LABEL_KINDS:
        raise MedclInputError(f"kind must be one of {list(LABEL_KINDS)}, got {kind!r}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise MedclInputError(f"features must be a 2D array (subjects, features), got shape {x.shape}")
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    g = np.asarray(groups, dtype=object).astype(str).reshape(-1)
    if not len(x) == len(y) == len(g):
        raise MedclInputError(
            f"features, labels and groups must have one row per subject, got {len(x)}, {len(y)}, {len(g)}"
        )
    if not np.isfinite(x).all():
        raise MedclInputError("features contain NaN or infinite values (check the encoder / images)")
    keep = np.isfinite(y)
    dropped = int((~keep).sum())
    x, y, g = x[keep], y[keep], g[keep]
    if len(y) == 0:
        raise MedclInputError("no subject has a value for this label")
    if kind != "continuous":
        if np.any(y != np.round(y)) or np.any(y < 0):
            raise MedclInputError(f"a {kind} label must hold class codes 0, 1, ...; got non-integer values")
        classes = np.unique(y)
        if len(classes) < 2:
            raise MedclInputError(
                f"the label is constant (only class {classes[0]:g} among {len(y)} labelled subjects); "
                "nothing to probe"
            )
        y = y.astype(np.int64)
    elif np.ptp(y) == 0:
        raise MedclInputError(f"the label is constant ({y[0]:g} for all {len(y)} labelled subjects)")
    codes = np.unique(g, return_inverse=True)[1].reshape(-1)
    return x, y, codes, dropped


def check_patient_folds(folds: np.ndarray, groups: np.ndarray) -> None:
    """Raise MedclInputError if any patient has subjects in two folds (a leak)."""
    folds = np.asarray(folds)
    groups = np.asarray(groups)
    order = np.lexsort((folds, groups))
    g, f = groups[order], folds[order]
    same_patient = g[1:] == g[:-1]
    if np.any(same_patient & (f[1:] != f[:-1])):
        bad = int(np.sum(same_patient & (f[1:] != f[:-1])))
        raise MedclInputError(f"the folds split {bad} patient(s) across folds; folds must be patient-level")


def _outer_folds(y: np.ndarray, groups: np.ndarray, kind: str, n_folds: int, seed: int) -> np.ndarray:
    from medcl.data.splits import group_kfold

    return group_kfold(groups, n_folds, seed=seed, y=y if kind != "continuous" else None)


def _inner_splits(
    y: np.ndarray, groups: np.ndarray, kind: str, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Patient-grouped inner CV splits (stratified for classes), or None if too small to split."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if kind != "continuous":
        # Each class must reach every inner fold: bound k by the patients per class.
        per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
        k = min(k, min(per_class))
    if k < 2:
        return None
    x = np.zeros((len(y), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if kind == "continuous":
            splits = list(GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, groups))
        else:
            splits = list(
                StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, groups)
            )
            if any(len(np.unique(y[tr])) < len(np.unique(y)) for tr, _ in splits):
                # grouping left a class out of some training part: fall back to subject-level
                splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y))
    return splits


def _subsample_patients(
    train_idx: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Keep ``size`` training patients (stratified on their first label when classes), return indices."""
    patients = np.unique(groups[train_idx])
    if size >= len(patients):
        return train_idx
    if kind == "continuous":
        chosen = rng.choice(patients, size=size, replace=False)
    else:
        # one label per patient (its first subject's), allocate per class proportionally, >= 1 each
        first = {}
        for i in train_idx:
            first.setdefault(groups[i], y[i])
        plabels = np.array([first[p] for p in patients])
        classes, counts = np.unique(plabels, return_counts=True)
        quota = np.maximum(1, np.floor(size * counts / counts.sum()).astype(int))
        quota = np.minimum(quota, counts)
        while quota.sum() < size:  # hand out the remainder to the largest classes
            room = counts - quota
            quota[int(np.argmax(room))] += 1
        while quota.sum() > size:
            quota[int(np.argmax(quota))] -= 1
        chosen = np.concatenate(
            [
                rng.choice(patients[plabels == c], size=q, replace=False)
                for c, q in zip(classes, quota, strict=True)
            ]
        )
    return train_idx[np.isin(groups[train_idx], chosen)]


# ---------------------------------------------------------------------------------------------
# Models and metrics
# ---------------------------------------------------------------------------------------------


def _fit_linear(x, y, groups, kind, *, inner_folds, seed, Cs, alphas):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "continuous":
        pipe = Pipeline([("scale", StandardScaler()), ("model", Ridge())])
        grid, scoring = {"model__alpha": list(alphas)}, "neg_mean_absolute_error"
    else:
        pipe = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000))])
        grid, scoring = {"model__C": list(Cs)}, "balanced_accuracy"
    return _grid_fit(pipe, grid, scoring, x, y, groups, kind, inner_folds, seed)


def _fit_knn(x, y, groups, kind, *, inner_folds, seed, neighbors):
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # The smallest inner training part bounds k.
    max_k = max(1, int(len(y) * (1 - 1 / max(inner_folds, 2))) - 1)
    ks = sorted({min(k, max_k) for k in neighbors})
    if kind == "continuous":
        pipe = Pipeline([("scale", StandardScaler()), ("model", KNeighborsRegressor(weights="distance"))])
        scoring = "neg_mean_absolute_error"
    else:
        pipe = Pipeline([("scale", StandardScaler()), ("model", KNeighborsClassifier(weights="distance"))])
        scoring = "balanced_accuracy"
    return _grid_fit(pipe, {"model__n_neighbors": ks}, scoring, x, y, groups, kind, inner_folds, seed)


def _grid_fit(pipe, grid, scoring, x, y, groups, kind, inner_folds, seed):
    from sklearn.model_selection import GridSearchCV

    splits = _inner_splits(y, groups, kind, inner_folds, seed)
    if splits is None or all(len(v) == 1 for v in grid.values()):
        params = {k: v[len(v) // 2] for k, v in grid.items()}
        return pipe.set_params(**params).fit(x, y), params
    search = GridSearchCV(pipe, grid, scoring=scoring, cv=splits, n_jobs=1, error_score=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(x, y)
    return search.best_estimator_, search.best_params_


def _scores(model, x, y, kind: str, n_classes: int) -> dict[str, float]:
    if kind == "continuous":
        return regression_metrics(y, model.predict(x))
    seen = np.asarray(model.classes_, dtype=np.int64)
    proba = np.zeros((len(x), n_classes))
    proba[:, seen] = model.predict_proba(x)  # a class absent from training keeps probability 0
    return classification_metrics(y, proba, kind)


def _parse_train_sizes(train_sizes: Sequence[int | str] | None) -> list[int | str]:
    if not train_sizes:
        return ["all"]
    out: list[int | str] = []
    for s in train_sizes:
        if isinstance(s, str) and s.strip().lower() == "all":
            value: int | str = "all"
        else:
            try:
                value = int(s)
            except (TypeError, ValueError):
                raise MedclInputError(f"train sizes must be positive integers or 'all', got {s!r}") from None
            if value < 1:
                raise MedclInputError(f"train sizes must be positive integers or 'all', got {s!r}")
        if value not in out:
            out.append(value)
    if "all" not in out:
        out.append("all")
    return out


def probe_features(
    features: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    kind: LabelKind,
    *,
    folds: np.ndarray | None = None,
    n_folds: int = 5,
    train_sizes: Sequence[int | str] | None = None,
    knn: bool = False,
    inner_folds: int = 3,
    seed: int = 0,
    Cs: Sequence[float] = DEFAULT_CS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    neighbors: Sequence[int] = DEFAULT_NEIGHBORS,
) -> ProbeResult:
    """Probe frozen features for a label with patient-level cross-validation.

    Args:
        features: (n, f) features, one row per subject.
        labels: (n,) label: class codes 0..K-1 (binary / multiclass) or values (continuous);
            NaN marks a missing label (those subjects are dropped, and counted in ``info``).
        groups: (n,) patient id per subject; no patient is ever on both sides of a split.
        kind: ``"binary"``, ``"multiclass"`` or ``"continuous"``.
        folds: (n,) outer fold per subject (e.g. ``cohort.folds()``); must be patient-level.
            Default: ``n_folds`` stratified group folds drawn with ``seed``.
        n_folds: number of outer folds when ``folds`` is not given.
        train_sizes: numbers of training patients per fold for the label-efficiency curve
            (``"all"`` is always included).
        knn: also run a k-nearest-neighbour probe (k chosen by inner CV).
        inner_folds: folds of the inner, patient-grouped CV that picks C / alpha / k.
        seed: seeds folds and training subsamples.
        Cs, alphas, neighbors: grids for the inner search.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        MedclInputError: mismatched shapes, a constant label, non-integer class codes, folds that
            split a patient, or fewer patients than folds.
    """
    x, y, g, dropped = _check_inputs(features, labels, groups, kind)
    if kind == "binary" and len(np.unique(y)) > 2:
        raise MedclInputError(f"a binary label has codes 0/1, got {np.unique(y).tolist()}")
    notes: list[str] = []
    if dropped:
        notes.append(f"{dropped} subject(s) without a label were left out")
    if folds is None:
        fold_of = _outer_folds(y, g, kind, n_folds, seed)
    else:
        fold_of = np.asarray(folds).reshape(-1)
        if len(fold_of) != len(np.asarray(labels).reshape(-1)):
            raise MedclInputError(f"folds must have one entry per subject, got {len(fold_of)}")
        fold_of = fold_of[np.isfinite(np.asarray(labels, dtype=float).reshape(-1))]
    check_patient_folds(fold_of, g)
    fold_ids = np.unique(fold_of)
    if len(fold_ids) < 2:
        raise MedclInputError("need at least 2 outer folds with labelled subjects")
    n_classes = int(y.max()) + 1 if kind != "continuous" else 0
    sizes = _parse_train_sizes(train_sizes)
    metric_names = list(REGRESSION_METRICS if kind == "continuous" else CLASSIFICATION_METRICS)

    probes = ["linear", "knn"] if knn else ["linear"]
    from threadpoolctl import threadpool_limits

    # Many small fits: one BLAS thread each is fastest, and avoids oversubscribing shared CPUs
    # (multi-threaded BLAS on these small matrices ran 10-50x slower on a loaded 2-core machine).
    with threadpool_limits(limits=1, user_api="blas"):
        per_fold, n_train, chosen = _cross_validate(
            x, y, g, kind, fold_of, fold_ids, sizes, probes, metric_names, n_classes,
            seed=seed, inner_folds=inner_folds, Cs=Cs, alphas=alphas, neighbors=neighbors,
        )
    return _summarise(
        x, y, g, kind, fold_ids, sizes, per_fold, n_train, chosen, metric_names, n_classes, notes,
        dropped=dropped, inner_folds=inner_folds, seed=seed,
    )


def _cross_validate(x, y, g, kind, fold_of, fold_ids, sizes, probes, metric_names, n_classes, *,
                    seed, inner_folds, Cs, alphas, neighbors):
    """Outer loop: per fold, per training size, per probe: fit on the training part, score the rest."""
    per_fold: dict[tuple[str, int | str], dict[str, list[float]]] = {}
    n_train: dict[tuple[str, int | str], list[int]] = {}
    chosen: dict[str, list[dict[str, Any]]] = {p: [] for p in probes}
    for fi, fold in enumerate(fold_ids):
        test_idx = np.flatnonzero(fold_of == fold)
        train_idx = np.flatnonzero(fold_of != fold)
        for size in sizes:
            rng = np.random.default_rng([seed, fi, 0 if size == "all" else int(size)])
            idx = train_idx if size == "all" else _subsample_patients(train_idx, y, g, kind, int(size), rng)
            for probe in probes:
                if probe == "knn" and size != "all":
                    continue
                key = (probe, size)
                scores = per_fold.setdefault(key, {m: [] for m in metric_names})
                n_train.setdefault(key, []).append(len(idx))
                if kind != "continuous" and len(np.unique(y[idx])) < 2:
                    for m in metric_names:  # cannot train a classifier on one class
                        scores[m].append(float("nan"))
                    continue
                if probe == "linear":
                    model, params = _fit_linear(
                        x[idx], y[idx], g[idx], kind, inner_folds=inner_folds, seed=seed, Cs=Cs, alphas=alphas
                    )
                else:
                    model, params = _fit_knn(
                        x[idx], y[idx], g[idx], kind, inner_folds=inner_folds, seed=seed, neighbors=neighbors
                    )
                if size == "all":
                    chosen[probe].append(json_safe(params))
                for m, v in _scores(model, x[test_idx], y[test_idx], kind, n_classes).items():
                    scores[m].append(v)
    return per_fold, n_train, chosen


def _summarise(x, y, g, kind, fold_ids, sizes, per_fold, n_train, chosen, metric_names, n_classes, notes,
               *, dropped, inner_folds, seed) -> ProbeResult:
    rows: list[dict[str, Any]] = []
    for (probe, size), scores in per_fold.items():
        for m in metric_names:
            summary = MetricSummary.from_folds(scores[m])
            rows.append(
                {
                    "probe": probe,
                    "train_size": size,
                    "n_train": float(np.mean(n_train[(probe, size)])),
                    "metric": m,
                    **asdict(summary),
                }
            )
        undefined = sum(not np.isfinite(v) for v in scores[metric_names[0]])
        if undefined:
            notes.append(
                f"{probe} probe, train size {size}: {metric_names[0]} undefined in {undefined} fold(s) "
                "(a class missing from the training or test part)"
            )
    full = min(n_train[("linear", "all")])
    small = [s for s in sizes if s != "all" and min(n_train[("linear", s)]) == full]
    if small:
        notes.append(f"train size(s) {small} reach the whole training part of some fold")
    info = {
        "n_dropped_missing_label": dropped,
        "n_features": int(x.shape[1]),
        "n_classes": n_classes or None,
        "class_counts": np.bincount(y).tolist() if kind != "continuous" else None,
        "inner_folds": inner_folds,
        "seed": seed,
        "chosen_params": chosen,
    }
    return ProbeResult(
        kind=kind,
        n_subjects=len(y),
        n_patients=len(np.unique(g)),
        n_folds=len(fold_ids),
        metric_names=metric_names,
        rows=rows,
        notes=notes,
        info=info,
    )
