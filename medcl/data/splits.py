"""Patient-level splits: no patient ever has subjects on two sides of a split.

Two ways to split a cohort, both by patient (group):

* a **column** of the table holding ``train`` / ``val`` / ``test`` per subject; every patient's
  subjects must carry the same value (:func:`column_split`);
* **group k-fold** (:func:`group_kfold`): scikit-learn's ``StratifiedGroupKFold`` when a label
  to stratify on is given, ``GroupKFold`` otherwise, both shuffled with a seed; folds listed as
  validation / test folds become those splits, the rest is training (:func:`folds_to_split`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from medcl.errors import InputProblems, MedclInputError

SPLIT_NAMES = ("train", "val", "test")


def _group_codes(groups: Sequence[str] | np.ndarray) -> np.ndarray:
    _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    return codes.reshape(-1)


def _stratification_classes(y: np.ndarray, k: int) -> np.ndarray:
    """Turn a label into classes for stratification: codes as they are, NaN as its own class;
    continuous values (many distinct non-integer values) into ``k`` quantile bins."""
    y = np.asarray(y, dtype=float)
    known = ~np.isnan(y)
    out = np.full(len(y), -1, dtype=np.int64)
    if known.any():
        values = y[known]
        integral = np.all(values == np.round(values))
        if integral and len(np.unique(values)) <= max(k, 20):
            out[known] = np.unique(values, return_inverse=True)[1]
        else:
            edges = np.unique(np.quantile(values, np.linspace(0, 1, k + 1)[1:-1]))
            out[known] = np.searchsorted(edges, values, side="right")
    return out


def group_kfold(
    groups: Sequence[str] | np.ndarray,
    k: int,
    *,
    seed: int = 0,
    y: np.ndarray | None = None,
) -> np.ndarray:
    """Assign each sample a fold in ``0..k-1`` so that all samples of a group share one fold.

    Args:
        groups: (n,) patient id per sample.
        k: number of folds (>= 2, at most the number of distinct groups).
        seed: shuffling seed; the same inputs and seed give the same folds.
        y: optional (n,) label to stratify on (class codes, or continuous values binned into
            quantiles; NaN counts as its own class).

    Returns:
        (n,) int64 array of fold indices.

    Raises:
        MedclInputError: when there are fewer groups than folds.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    codes = _group_codes(groups)
    n = len(codes)
    n_groups = len(np.unique(codes)) if n else 0
    if k < 2:
        raise MedclInputError(f"folds must be >= 2, got {k}")
    if n_groups < k:
        raise MedclInputError(f"cannot make {k} patient-level folds from {n_groups} patient(s)")
    folds = np.empty(n, dtype=np.int64)
    x = np.zeros((n, 1))
    if y is None:
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(x, groups=codes)
    else:
        classes = _stratification_classes(np.asarray(y), k)
        if np.bincount(np.unique(classes, return_inverse=True)[1]).max() < k:
            # Every class is smaller than the number of folds: sklearn refuses to stratify, and
            # stratification could not balance anything anyway. Plain group folds.
            parts = GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, groups=codes)
        else:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                # "The least populated class in y has only m members": fine, stratification is best-effort.
                warnings.simplefilter("ignore", UserWarning)
                parts = list(splitter.split(x, classes, groups=codes))
    for fold, (_, test_idx) in enumerate(parts):
        folds[test_idx] = fold
    return folds


def folds_to_split(folds: np.ndarray, val_folds: Sequence[int], test_folds: Sequence[int] = ()) -> np.ndarray:
    """Map fold indices to ``"train"`` / ``"val"`` / ``"test"`` (an object ndarray of str)."""
    folds = np.asarray(folds)
    out = np.full(len(folds), "train", dtype=object)
    out[np.isin(folds, list(val_folds))] = "val"
    out[np.isin(folds, list(test_folds))] = "test"
    return out


def split_problems(values: Sequence[object], groups: Sequence[str], *, where: str = "split") -> list[str]:
    """Problems with a split column: values outside train/val/test, patients on two sides.

    ``where`` prefixes each message (e.g. ``"participants.csv, column 'split'"``). Rows are
    numbered from 1 (first data row).
    """
    problems: list[str] = []
    seen: dict[str, tuple[str, int]] = {}
    reported: set[str] = set()
    for i, (value, group) in enumerate(zip(values, groups, strict=True)):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if text not in SPLIT_NAMES:
            shown = repr(text) if text else "an empty value"
            problems.append(f"{where}: row {i + 1} has {shown}; expected one of {list(SPLIT_NAMES)}")
            continue
        first = seen.setdefault(str(group), (text, i))
        if first[0] != text and str(group) not in reported:
            reported.add(str(group))
            problems.append(
                f"{where}: a patient is in two splits: row {first[1] + 1} is {first[0]!r}, "
                f"row {i + 1} is {text!r} (all subjects of a patient must share one split)"
            )
    return problems


def column_split(values: Sequence[object], groups: Sequence[str], *, where: str = "split") -> np.ndarray:
    """Read a split column (train/val/test per sample), checking it is patient-level.

    Raises:
        InputProblems: listing every bad value and every patient found in two splits.
    """
    problems = split_problems(values, groups, where=where)
    if problems:
        raise InputProblems(problems, header="invalid split")
    return np.array([str(v).strip() for v in values], dtype=object)
