"""Decoupled uniformity, with or without a prior kernel (Dufumier et al., ICML 2023).

For z (n, V, d): each view is L2-normalised, the centroids are ``mu_i = mean_v z_i^v`` and

    L = log( 1/(n(n-1)) * sum_{i != j} exp(-t * ||mu_i - mu_j||^2) ).

With a PSD kernel K (n, n) on the subjects' attributes, the centroids are replaced by the
kernel-ridge estimate ``mu_hat = (K + lam I)^-1 K mu`` (K treated as a constant), computed as
``mu - lam * (K + lam I)^-1 mu`` with a Cholesky factorisation: no inverse, no n x n product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from medcl.errors import MedclInputError
from medcl.losses._checks import check_positive, check_subjects, check_views, full_precision
from medcl.losses._cholesky import cholesky_lower_
from medcl.losses._pairwise import log_mean_gaussian_potential
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad, gather_optional

if TYPE_CHECKING:
    from medcl.kernels import PriorKernel

_SYMMETRY_RTOL = 1e-4


def _check_symmetric(k: torch.Tensor) -> None:
    """Raise unless ``|K v - K^T v| <= rtol ||K||_F ||v||`` for two fixed random probes v.

    Matrix-vector products read K without copying it (a full ``K - K^T`` costs several passes
    over n x n memory at large n); any real asymmetry shows in a random probe.
    """
    generator = torch.Generator(device=k.device).manual_seed(0)
    probes = torch.randn(k.shape[0], 2, generator=generator, dtype=k.dtype, device=k.device)
    asym = float((k @ probes - k.mT @ probes).abs().max())
    bound = float(torch.linalg.vector_norm(k)) * float(torch.linalg.vector_norm(probes, dim=0).max())
    if not asym <= _SYMMETRY_RTOL * max(bound, 1e-30):  # also catches NaN / inf
        raise MedclInputError(
            f"kernel: expected a symmetric (n, n) matrix with finite entries, got "
            f"|K v - K^T v| = {asym:.3g} for a probe v (relative {asym / max(bound, 1e-30):.3g})"
        )


def centroids(z: torch.Tensor) -> torch.Tensor:
    """Centroids (n, d) of the L2-normalised views of z (n, V, d)."""
    return F.normalize(z, dim=-1).mean(dim=1)


def kernel_smoothed_centroids(mu: torch.Tensor, kernel: torch.Tensor, lam: float) -> torch.Tensor:
    """``(K + lam I)^-1 K mu``, computed as ``mu - lam (K + lam I)^-1 mu`` from a Cholesky factor.

    ``kernel`` (n, n) must be symmetric positive semi-definite; it is detached (no gradient).
    Raises MedclInputError naming ``kernel`` when it is not square (n, n), not symmetric, or
    when the Cholesky factorisation fails (K not PSD).
    """
    n = mu.shape[0]
    if not isinstance(kernel, torch.Tensor):
        raise MedclInputError(
            f"kernel: expected a torch.Tensor of shape ({n}, {n}) or None, got {type(kernel).__name__}"
        )
    if kernel.shape != (n, n):
        raise MedclInputError(
            f"kernel: expected shape ({n}, {n}) to match the {n} subjects of z, got {tuple(kernel.shape)}"
        )
    k = kernel.detach().to(device=mu.device, dtype=mu.dtype)
    _check_symmetric(k)
    # Every pass over the n x n matrix counts at large n: one copy, then the factorisation.
    shifted = k.clone(memory_format=torch.contiguous_format)
    shifted.diagonal().add_(lam)
    chol, info = cholesky_lower_(shifted)
    if info != 0:
        raise MedclInputError(
            f"kernel: expected a positive semi-definite matrix; the Cholesky factorisation of "
            f"kernel + lam*I (lam={lam:g}) failed at column {info} (kernel has eigenvalues "
            f"below -lam, or non-finite entries)"
        )
    # (K + lam I)^-1 K mu = mu - lam (K + lam I)^-1 mu, with two triangular solves.
    solved = torch.linalg.solve_triangular(chol, mu, upper=False)
    solved = torch.linalg.solve_triangular(chol.mT, solved, upper=True)
    return mu - lam * solved


@full_precision
def decoupled_uniformity(
    z: torch.Tensor,
    kernel: torch.Tensor | None = None,
    *,
    t: float = 2.0,
    lam: float = 0.01,
    gather: bool = False,
) -> torch.Tensor:
    """Decoupled uniformity loss of z (n, V, d), optionally with a prior kernel K (n, n).

    Args:
        z: projector outputs, not normalised, (n subjects, V >= 2 views, d features).
        kernel: PSD kernel (n, n) on the subjects (treated as a constant) or None. With
            ``gather=True`` it must be the kernel of the *gathered* (global) batch.
        t: uniformity temperature (> 0).
        lam: kernel ridge regularisation (> 0); unused without a kernel.
        gather: all-gather z over the initialised process group first (no-op otherwise).

    Returns:
        A scalar tensor: ``log(1/(n(n-1)) sum_{i!=j} exp(-t ||mu_i - mu_j||^2))``.

    Raises:
        MedclInputError: z not (n, V, d) with n, V >= 2; t or lam not > 0; kernel not (n, n),
            not symmetric or not PSD.
    """
    check_views(z, "z", min_subjects=1 if gather else 2)  # n >= 2 applies to the global batch
    t = check_positive(t, "t")
    lam = check_positive(lam, "lam")
    if gather:
        z = check_subjects(all_gather_with_grad(z), "z (global batch)")
    mu = centroids(z)
    if kernel is not None:
        mu = kernel_smoothed_centroids(mu, kernel, lam)
    return log_mean_gaussian_potential(mu, t)


class DecoupledUniformityLoss(LossModule):
    """Decoupled uniformity without prior (method ``du``). See :func:`decoupled_uniformity`."""

    loss_function = staticmethod(decoupled_uniformity)

    def __init__(self, t: float = 2.0, gather: bool = False):
        super().__init__(gather, t=t)


class KernelDecoupledUniformityLoss(LossModule):
    """Kernel decoupled uniformity (method ``kernel_du``).

    Holds a fitted :class:`medcl.kernels.PriorKernel`; ``forward`` builds K from the (gathered)
    attributes and missing mask, then calls :func:`decoupled_uniformity`. With ``use_prior``
    False it is plain decoupled uniformity (the prior warm-up, ``prior.warmup_epochs``).
    """

    def __init__(self, kernel: PriorKernel, t: float = 2.0, lam: float = 0.01, gather: bool = False):
        if not callable(kernel):
            raise MedclInputError(f"kernel: expected a fitted medcl.kernels.PriorKernel, got {type(kernel).__name__}")
        super().__init__(gather, t=t, lam=lam)
        self.kernel = kernel
        self.use_prior = True

    def forward(
        self,
        z: torch.Tensor,
        attributes: torch.Tensor | None = None,
        missing: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of z (n, V, d) with K = kernel(attributes (n, p), missing (n, p) bool)."""
        if attributes is None:
            raise MedclInputError("attributes: kernel_du needs the (n, p) attribute matrix, got None")
        check_views(z, "z", min_subjects=1 if self.gather else 2)  # n >= 2: checked on the global batch below
        if self.gather:
            z = all_gather_with_grad(z)
        attributes = gather_optional(attributes, self.gather)
        missing = gather_optional(missing, self.gather)
        if attributes.shape[0] != z.shape[0]:
            raise MedclInputError(
                f"attributes: expected {z.shape[0]} rows (one per subject of z), got {attributes.shape[0]}"
            )
        k = self.kernel(attributes, missing) if self.use_prior else None
        return decoupled_uniformity(z, k, t=self.t, lam=self.lam, gather=False)  # checks n >= 2
