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
