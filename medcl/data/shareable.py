"""A cohort summary that may leave the hospital: rounded counts and coarse ranges, no one's value.

``Cohort.summary()`` is for the data's owner (``medcl validate``): exact counts and every
attribute's min, max and mean, i.e. the youngest and oldest subjects' ages. An exported encoder
carries :func:`shareable_summary` instead, k-anonymous with k = ``MIN_GROUP`` (10):

- counts (subjects, patients, splits, classes, categories, missing values) rounded to the nearest
  10, and shown as ``"<10"`` below 10, so no count singles out a few subjects; categories and
  classes held by fewer than 10 subjects are not named but pooled into one ``other`` count;
- a continuous attribute or label as three quantiles (10 %, 50 %, 90 %), each the mean of the 10
  sorted values around it, rounded to 2 significant digits; none with fewer than 20 values.
  No extreme value is shown: the 10 % quantile pools the 10 values around it, not the minimum.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.kernels.prior import MIN_GROUP

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort

QUANTILES = (0.1, 0.5, 0.9)
OTHER = f"other (each <{MIN_GROUP})"
_FEW = f"<{MIN_GROUP}"


def rounded_count(n: int) -> int | str:
    """``n`` rounded to the nearest 10, or ``"<10"`` when ``n`` is below ``MIN_GROUP`` (0 stays 0)."""
    n = int(n)
    if n == 0:
        return 0
    return _FEW if n < MIN_GROUP else round(n / 10.0) * 10


def two_digits(x: float) -> float:
    """``x`` rounded to 2 significant digits (40.0123 -> 40.0, 0.01234 -> 0.012)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(round(x, 1 - math.floor(math.log10(abs(x)))))


def pooled_quantiles(values: np.ndarray) -> dict[str, float] | str:
    """10/50/90 % quantiles, each the mean of ``MIN_GROUP`` sorted values around it, 2 digits."""
    known = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    if len(known) < 2 * MIN_GROUP:
        return f"not shown (fewer than {2 * MIN_GROUP} values)"
    out = {}
    for q in QUANTILES:
        start = min(max(round(q * (len(known) - 1)) - MIN_GROUP // 2, 0), len(known) - MIN_GROUP)
        out[f"q{round(q * 100)}"] = two_digits(float(known[start : start + MIN_GROUP].mean()))
    return out


def pooled_counts(codes: np.ndarray, names: list[str]) -> dict[str, int | str]:
    """Rounded count per category held by >= ``MIN_GROUP`` subjects; the rarer ones as one ``other``.

    A rare category is not named, so a category held by one subject is not visible.
    """
    counts = {name: int((codes == k).sum()) for k, name in enumerate(names)}
    out: dict[str, int | str] = {name: rounded_count(c) for name, c in counts.items() if c >= MIN_GROUP}
    if rare := sum(c for c in counts.values() if c < MIN_GROUP):
        out[OTHER] = rounded_count(rare)
    return out


def shareable_summary(cohort: Cohort) -> dict[str, Any]:
    """Counts, split sizes, label balance and coarse attribute ranges, k-anonymous (module docstring)."""
    split = cohort.split()
    out: dict[str, Any] = {
        "name": cohort.manifest.name,
        "image_kind": cohort.manifest.image.kind,
        "subjects": rounded_count(len(cohort)),
        "patients": rounded_count(len(set(cohort.patient_ids))),
        "splits": {s: rounded_count(int((split == s).sum())) for s in ("train", "val", "test")},
        "split_method": cohort.manifest.split.method,
        "rounding": f"counts to the nearest 10 ('{_FEW}' below {MIN_GROUP}); quantiles are means of "
        f"{MIN_GROUP} values, 2 significant digits",
        "labels": {},
        "attributes": {},
    }
    for spec in cohort.manifest.labels:
        values, classes = cohort.label(spec.name), cohort.label_classes(spec.name)
        entry: dict[str, Any] = {"type": spec.type, "missing": rounded_count(int(np.isnan(values).sum()))}
        entry.update({"counts": pooled_counts(values, classes)} if classes is not None
                     else {"quantiles": pooled_quantiles(values)})
        out["labels"][spec.name] = entry
    for spec in cohort.manifest.attributes:
        values, missing, _ = cohort.attribute_matrix([spec.name])
        absent = missing.any(axis=1)
        entry = {"type": spec.type, "missing": rounded_count(int(absent.sum()))}
        categories = cohort.attribute_categories(spec.name)
        if spec.type == "continuous":
            entry["quantiles"] = pooled_quantiles(values[~absent, 0])
        elif categories is not None:
            entry["counts"] = pooled_counts(values[:, 0], categories)
        else:
            entry["dim"] = int(values.shape[1])
        out["attributes"][spec.name] = entry
    return out
