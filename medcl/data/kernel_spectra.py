"""Where a cohort meets a kernel spectrum: the spectra of a cohort's attribute kernels.

``medcl attributes`` and a kernel DU run (its ``spectrum.json``) fit each attribute combination's
prior kernel on the training split and summarise it on batches with
:func:`medcl.kernels.spectrum.batch_spectrum`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.kernels.spectrum import BatchSpectrum, batch_spectrum

if TYPE_CHECKING:
    from medcl.data.cohort import Cohort


def cohort_spectra(
    cohort: Cohort,
    subjects: np.ndarray,
    kernels: dict[str, list[str]],
    *,
    batch_size: int,
    lam: float,
    combine: str | None = None,
    batches: int = 16,
    seed: int = 0,
    **options: Any,
) -> list[BatchSpectrum]:
    """Spectra of named attribute combinations, each fitted on ``subjects`` (the training split).

    ``kernels`` maps a display name to attribute names, e.g. ``{"age": ["age"], "age+sex": [...]}``.
    ``combine`` (None: the manifest's) and ``options`` (``instance_weight``, ``bandwidth_scale``,
    ``bandwidth_rule``: :class:`medcl.kernels.PriorKernel`'s) apply to every kernel as in a run's prior.
    """
    out = []
    for display, names in kernels.items():
        values, missing, _ = cohort.attribute_matrix(names)
        kernel = cohort.prior_kernel(names, combine=combine, **options)
        kernel.fit(values[subjects], missing[subjects])
        out.append(batch_spectrum(kernel, values[subjects], missing[subjects], batch_size=batch_size,
                                  lam=lam, batches=batches, seed=seed, name=display))
    return out
