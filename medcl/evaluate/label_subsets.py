"""Part of the training labels, by patient: ``--train-size N | F%``, stratified and nested.

One random priority per patient (from the seed) orders the patients inside each stratum (the class
of a classification label, or a quartile of a continuous one); the strata are then interleaved in
proportion to their sizes. A size takes a prefix of that single order, so for one seed the subsets
are nested (10 % ⊂ 25 % ⊂ 100 %) and each keeps the class balance up to rounding.
"""

from __future__ import annotations

import math
import re

import numpy as np

from medcl.errors import MedclInputError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_train_size(text: str | int | float | None) -> int | float | None:
    """``"40"`` -> 40 patients; ``"25%"`` -> 0.25; None / ``"all"`` / ``"100%"`` -> None (all)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "all")):
        return None
    match = _SIZE.match(str(text))
    if not match:
        raise MedclInputError(f"--train-size {text!r}: expected a number of patients (40) or a percentage (25%)")
    value, percent = float(match.group(1)), match.group(2) == "%"
    if percent:
        if not 0 < value <= 100:
            raise MedclInputError(f"--train-size {text!r}: a percentage must be in (0, 100]")
        return None if value == 100 else value / 100
    if value < 1 or value != int(value):
        raise MedclInputError(f"--train-size {text!r}: a number of patients must be a positive integer")
    return int(value)


def patient_order(patients: np.ndarray, strata: np.ndarray, seed: int) -> list[str]:
    """Every patient once, in the stratified order whose prefixes are the training subsets."""
    patients = np.asarray(patients).astype(str)
    unique, first = np.unique(patients, return_index=True)
    stratum = np.asarray(strata)[first]
    rng = np.random.default_rng([int(seed), 4099])
    priority = rng.random(len(unique))
    keys = []
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        members = members[np.argsort(priority[members], kind="stable")]
        n = len(members)
        # the r-th patient of a stratum of n sits at (r + 0.5) / n: strata interleave by proportion
        keys += [((r + 0.5) / n, priority[m], unique[m]) for r, m in enumerate(members)]
    return [name for _, _, name in sorted(keys)]


def strata_of(kind: str, y: np.ndarray) -> np.ndarray:
    """Class codes for a classification label; quartile of the value for a continuous one."""
    y = np.asarray(y, dtype=float)
    if kind != "continuous":
        return y.astype(int)
    edges = np.quantile(y, [0.25, 0.5, 0.75]) if len(y) else []
    return np.searchsorted(edges, y, side="right")


def nested_train_subset(
    rows: np.ndarray, patients: np.ndarray, y: np.ndarray, kind: str, size: int | float | None, seed: int
) -> np.ndarray:
    """The rows (cohort indices, a subset of ``rows``) of the first ``size`` training patients.

    ``patients`` and ``y`` are per cohort row; ``size`` is a patient count, a fraction in (0, 1) or
    None (all). Raises MedclInputError when the size exceeds the training patients.
    """
    rows = np.asarray(rows)
    if size is None:
        return rows
    order = patient_order(np.asarray(patients)[rows], strata_of(kind, np.asarray(y)[rows]), seed)
    n = size if isinstance(size, int) else max(1, math.ceil(size * len(order) - 1e-9))
    if n > len(order):
        raise MedclInputError(f"--train-size {size}: the training split has only {len(order)} patients")
    keep = set(order[:n])
    return rows[[str(p) in keep for p in np.asarray(patients)[rows]]]
