"""Kernel spectrum: how much of a training batch kernel decoupled uniformity still sees.

Kernel DU replaces the batch's centroids ``mu`` by ``A mu`` with ``A = (K + lam I)^-1 K``. In K's
eigenbasis A keeps direction k with the factor ``e_k / (e_k + lam)``, and the gradient reaching the
encoder is ``A^T dL/d(A mu)``: a direction with ``e_k << lam`` is neither spread by the loss nor
trained. Two numbers per kernel, averaged over batches of the training split drawn at the run's batch
size:

- ``eigenvalues_above_lam``: how many directions of the batch the smoother keeps (DU keeps all n);
- ``retained_fraction``: ``trace(A) / n = mean_k e_k / (e_k + lam)``, the kernel ridge smoother's
  effective degrees of freedom per subject (DU: ``1 / (1 + lam)``, close to 1);
- ``kept_spread``: ``||A||_F^2 / n = mean_k (e_k / (e_k + lam))^2``, the share of an isotropic
  batch's squared spread the smoothed centroids keep. The uniformity temperature t acts on squared
  distances, so without ``prior.rescale_centroids`` the prior also lowers it to about ``t * kept_spread``.

A kernel on one scalar attribute keeps a handful of directions whatever the batch size, so its
retained fraction falls as the batch grows; see ``docs/kernel_spectrum.md``. The spectra of a
cohort's attribute kernels are :func:`medcl.data.kernel_spectra.cohort_spectra`; ``lam`` is a number
here (``PretrainConfig.lam`` resolves ``inv_sqrt_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.errors import MedclInputError

if TYPE_CHECKING:
    from medcl.kernels import PriorKernel

LOW_RETAINED_FRACTION = 0.3
"""Below this retained fraction :func:`spectrum_warning` says the run's kernel keeps too little."""


@dataclass(frozen=True)
class BatchSpectrum:
    """Spectrum summary of one kernel on training batches (means over ``batches`` draws)."""

    name: str
    batch_size: int
    lam: float
    instance_weight: float
    eigenvalues_above_lam: float
    retained_fraction: float
    kept_spread: float
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def batch_spectrum(
    kernel: PriorKernel,
    values: np.ndarray,
    missing: np.ndarray | None,
    *,
    batch_size: int,
    lam: float,
    batches: int = 16,
    seed: int = 0,
    name: str = "kernel",
) -> BatchSpectrum:
    """Spectrum summary of a fitted ``kernel`` over random batches of the rows of ``values``.

    Args:
        kernel: a fitted PriorKernel (its instance weight is part of the kernel).
        values, missing: (n, p) training attribute matrix and mask, as ``Cohort.attribute_matrix``.
        batch_size: subjects per batch (capped at n); lam: the ridge regularisation (> 0).
        batches: number of batches drawn without replacement (seeded by ``seed``).
    """
    n = len(values)
    if n < 2:
        raise MedclInputError(f"values: need at least 2 subjects for a batch spectrum, got {n}")
    if not (isinstance(lam, int | float) and not isinstance(lam, bool) and np.isfinite(lam) and lam > 0):
        raise MedclInputError(f"lam: expected a number > 0, got {lam!r}")
    size = min(int(batch_size), n)
    rng = np.random.default_rng(seed)
    above, retained, kept = [], [], []
    for _ in range(max(1, int(batches))):
        rows = np.sort(rng.choice(n, size, replace=False))
        k = kernel(np.asarray(values[rows], np.float64), None if missing is None else missing[rows])
        eig = np.clip(np.linalg.eigvalsh(k.numpy()), 0.0, None)
        above.append(float((eig > lam).sum()))
        retained.append(float(np.mean(eig / (eig + lam))))
        kept.append(float(np.mean((eig / (eig + lam)) ** 2)))
    return BatchSpectrum(name=name, batch_size=size, lam=lam, instance_weight=kernel.instance_weight,
                         eigenvalues_above_lam=float(np.mean(above)), retained_fraction=float(np.mean(retained)),
                         kept_spread=float(np.mean(kept)), batches=len(above))


def spectrum_table(rows: Sequence[BatchSpectrum], with_instance: Sequence[BatchSpectrum] | None = None) -> str:
    """Plain-text table of spectra (what ``medcl attributes`` prints).

    ``with_instance``: the same kernels with an instance term, shown as an extra column.
    """
    extra = with_instance[0].instance_weight if with_instance else None
    head = f"{'kernel':<28} {'batch':>5} {'lam':>7} {'eig > lam':>10} {'retained':>9} {'spread kept':>11}"
    if extra is not None:
        head += f" {f'retained (w={extra:g})':>18} {f'spread kept (w={extra:g})':>21}"
    lines = [head]
    for i, r in enumerate(rows):
        line = (f"{r.name:<28} {r.batch_size:>5} {r.lam:>7.4g} "
                f"{r.eigenvalues_above_lam:>10.1f} {r.retained_fraction:>9.2f} {r.kept_spread:>11.2f}")
        if with_instance:
            line += f" {with_instance[i].retained_fraction:>18.2f} {with_instance[i].kept_spread:>21.2f}"
        lines.append(line)
    return "\n".join(lines)


def spectrum_warning(row: BatchSpectrum, threshold: float = LOW_RETAINED_FRACTION) -> str | None:
    """A warning when the kernel keeps less than ``threshold`` of the batch, saying what to change."""
    if row.retained_fraction >= threshold:
        return None
    return (
        f"the prior kernel ({row.name}) keeps {row.retained_fraction:.0%} of a batch of {row.batch_size} "
        f"(about {row.eigenvalues_above_lam:.0f} of {row.batch_size} directions above lam={row.lam:.3g}): "
        f"kernel DU will barely see individual scans and can learn less than plain DU. Raise "
        f"prior.instance_weight (e.g. to {max(row.lam, 0.01):.3g}), add attributes (e.g. an image-based "
        f"prior such as a VAE latent) or narrow the bandwidths (prior.bandwidth_scale < 1)."
    )
