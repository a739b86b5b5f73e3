"""The comparison table's marks: ``†`` (prior is the probed label or a close proxy), ``!`` (collapse).
"""


from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcl.evaluate.compare.arms import Arm, reads_attributes, reads_label

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort


PROXY_CORRELATION = 0.7
"""|Pearson r| between a continuous or binary prior attribute and a binary or continuous label, on the
training split, that marks a close proxy: the attribute alone explains about half (r^2 >= 0.49) of
the label's variance."""
PROXY_CKA = 0.5
"""CKA between an attribute's (or the whole prior's) kernel and the label's kernel (delta for
classes, median-heuristic RBF for values), on the training split, that marks a close proxy. Used
for every attribute kind, and the only measure for categorical and embedding attributes."""


# ------------------------------------------------------------------------------------- marks


def run_health(run_path: Path) -> tuple[bool, str | None]:
    """``(collapsed, reason)`` from a run's ``summary.json["health"]`` (absent: not collapsed)."""
    from medcl.pretrain.run_dir import RunDir

    try:
        summary = RunDir(run_path).summary()
    except (OSError, ValueError):
        return False, None
    health = summary.get("health") if isinstance(summary, dict) else None
    if not isinstance(health, dict):
        return False, None
    collapsed = bool(health.get("collapsed", False))
    return collapsed, (str(health.get("reason")) if collapsed and health.get("reason") else None)


def proxy_mark(cohort: Cohort, arm: Arm, label: str, train_idx: np.ndarray) -> tuple[bool, str | None, dict]:
    """Is the arm's prior the probed label or a close proxy of it? ``(marked, reason, measures)``.

    The label itself: an attribute named like the label, or a label arm's (supervised, supcon) label. A close
    proxy: |Pearson r| >= PROXY_CORRELATION for a scalar attribute, or CKA >= PROXY_CKA between the
    attribute's (or the whole prior's) kernel and the label's kernel, on the labelled training
    subjects. ``measures`` maps each attribute (and the combination) to its r / CKA.
    """
    if reads_label(arm.method):
        if arm.label == label:
            return True, f"trained on {label!r} itself", {}
        return False, None, {}
    if not reads_attributes(arm.method) or not arm.attributes:
        return False, None, {}
    if label in arm.attributes:
        return True, f"prior attribute {label!r} is the probed label", {}
    from medcl.evaluate.attributes import alignment_test, label_features

    kind = cohort.manifest.label(label).type
    y_all = cohort.label(label)
    idx = train_idx[np.isfinite(y_all[train_idx])]
    if len(idx) < 3 or len(np.unique(y_all[idx])) < 2:
        return False, None, {}
    y = y_all[idx]
    feats = label_features(y, kind)
    measures: dict[str, dict[str, float]] = {}
    reasons: list[str] = []
    sets = [[a] for a in arm.attributes] + ([list(arm.attributes)] if len(arm.attributes) > 1 else [])
    for names in sets:
        key = "+".join(names)
        values, missing, _ = cohort.attribute_matrix(names)
        entry: dict[str, float] = {}
        scalar = len(names) == 1 and cohort.manifest.attribute(names[0]).type in ("continuous", "binary")
        if scalar and kind != "multiclass":
            ok = ~missing[idx, 0]
            a = values[idx, 0][ok].astype(np.float64)
            if ok.sum() > 2 and np.ptp(a) > 0:
                r = float(np.corrcoef(a, y[ok])[0, 1])
                entry["r"] = r
                if abs(r) >= PROXY_CORRELATION:
                    reasons.append(f"|r|({key}, {label}) = {abs(r):.2f} >= {PROXY_CORRELATION}")
        kernel = cohort.prior_kernel(names).fit(values[idx], missing[idx])
        k = kernel(values[idx], missing[idx])
        k = k.detach().cpu().double().numpy() if hasattr(k, "detach") else np.asarray(k, np.float64)
        cka, _ = alignment_test(k, feats, 0, 0)
        if math.isfinite(cka):
            entry["cka"] = float(cka)
            if cka >= PROXY_CKA:
                reasons.append(f"CKA({key}, {label}) = {cka:.2f} >= {PROXY_CKA}")
        measures[key] = entry
    return bool(reasons), ("; ".join(reasons) + " on the training split") if reasons else None, measures
