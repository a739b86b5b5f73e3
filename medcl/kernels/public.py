"""What a report or an export may show of a fitted prior kernel (names, kinds, bandwidths; no data).

A fitted kernel's imputation reference summarises training subjects; :func:`public_kernel` keeps its
size only. Used by :mod:`medcl.report` (the run page) and :mod:`medcl.export` (bundle metadata).
"""

from __future__ import annotations

from typing import Any


def public_kernel(kernel: Any) -> Any:
    """What a report or an export may show of a fitted kernel dict (``PriorKernel.to_dict()``).

    Keeps the combination and, per term, its name, kind, weight and (fitted) bandwidth; the
    imputation reference (training-cohort summaries) is replaced by its size. Anything that is
    not a kernel dict comes back as a short placeholder.
    """
    if not isinstance(kernel, dict) or not isinstance(kernel.get("terms"), list):
        return None if kernel is None else "<not a kernel description; not shown>"
    fitted = kernel.get("fitted") if isinstance(kernel.get("fitted"), dict) else {}
    bandwidths = fitted.get("bandwidths") if isinstance(fitted.get("bandwidths"), dict) else {}
    references = fitted.get("references") if isinstance(fitted.get("references"), dict) else {}
    terms = []
    for term in kernel["terms"]:
        if not isinstance(term, dict):
            continue
        name = term.get("name")
        entry = {"name": name, "kind": term.get("kind"),
                 "bandwidth": bandwidths.get(name, term.get("bandwidth")), "weight": term.get("weight")}
        ref = references.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("points"), list):
            entry["imputation_reference"] = f"<{len(ref['points'])} summary points; not shown>"
        terms.append(entry)
    return {"combine": kernel.get("combine"), "fitted": bool(fitted), "terms": terms}


def synthetic_batch(kernel: dict[str, Any], n: int = 64, seed: int = 0) -> tuple[Any, Any]:
    """A made-up batch of ``n`` attribute rows drawn from a fitted kernel dict's de-identified reference.

    What a report draws instead of a real batch (no subject's values): rbf values from the mixture
    of the reference's group Gaussians (mean, spread), categories from their frequencies (each
    pooled "other" draw a code of its own), cosine vectors around the mean unit vector. A term
    without a reference (fewer than 10 training values) gets standard normal draws scaled by its
    bandwidth (rbf) or two categories. Rows are sorted by the first column so the picture shows
    the kernel's structure. Returns ``(values (n, p) float64, missing (n, p) bool, all False)``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    terms = kernel["terms"]
    fitted = kernel.get("fitted") or {}
    values = np.zeros((n, max(int(t["stop"]) for t in terms)))
    for term in terms:
        start, stop = int(term["start"]), int(term["stop"])
        width = stop - start
        ref = (fitted.get("references") or {}).get(term["name"]) or {}
        points = np.asarray(ref.get("points") or [], dtype=np.float64).reshape(-1, width)
        weights = np.asarray(ref.get("weights") or [], dtype=np.float64)
        pick = rng.choice(len(points), size=n, p=weights / weights.sum()) if len(points) else None
        if term["kind"] == "delta":
            codes = points[pick] if pick is not None else rng.integers(0, 2, (n, 1)).repeat(width, axis=1)
            other = codes[:, 0] < 0  # the pooled rare categories: each draw its own code, matching no one
            codes[other] = -1.0 - np.arange(int(other.sum()))[:, None]
            values[:, start:stop] = codes
        elif term["kind"] == "cosine":
            centre = points[0] if pick is not None else np.zeros(width)
            values[:, start:stop] = centre + rng.normal(size=(n, width)) / np.sqrt(width)
        elif pick is not None:
            spreads = np.asarray(ref.get("spreads") or np.zeros(len(points)), dtype=np.float64)
            values[:, start:stop] = points[pick] + rng.normal(size=(n, width)) * np.sqrt(spreads[pick])[:, None]
        else:
            bandwidth = (fitted.get("bandwidths") or {}).get(term["name"]) or term.get("bandwidth") or 1.0
            values[:, start:stop] = rng.normal(size=(n, width)) * bandwidth
    order = np.argsort(values[:, 0], kind="stable")
    return values[order], np.zeros(values.shape, dtype=bool)
