"""Decoupled uniformity, with or without a prior kernel (Dufumier et al., ICML 2023).

For z (n, V, d): each view is L2-normalised, the centroids are ``mu_i = mean_v z_i^v`` and

    L = log( 1/(n(n-1)) * sum_{i != j} exp(-t * ||mu_i - mu_j||^2) ).

With a PSD kernel K (n, n) on the subjects' attributes, the centroids are replaced by the
kernel-ridge estimate ``mu_hat = (K + lam I)^-1 K mu`` (K treated as a constant), computed as
``mu - lam * (K + lam I)^-1 mu`` with a Cholesky factorisation: no inverse, no n x n product.

The ridge estimate shrinks the centroids: an isotropic batch keeps ``r = ||A||_F^2 / n`` of its
squared spread (A = (K + lam I)^-1 K), so the same t acts as a temperature ``t r`` on the
directions the prior does not pool (0.56 t where an instance term keeps 0.75 of them).
``rescale=True`` compares the smoothed centroids at DU's scale, i.e. uses ``t / r``; see
docs/kernel_spectrum.md for why that matters.
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


def _ridge_factor(kernel: torch.Tensor, n: int, lam: float, like: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of ``K + lam I`` after checking K; raises MedclInputError naming ``kernel``."""
    if not isinstance(kernel, torch.Tensor):
        raise MedclInputError(
            f"kernel: expected a torch.Tensor of shape ({n}, {n}) or None, got {type(kernel).__name__}"
        )
    if kernel.shape != (n, n):
        raise MedclInputError(
            f"kernel: expected shape ({n}, {n}) to match the {n} subjects of z, got {tuple(kernel.shape)}"
        )
    k = kernel.detach().to(device=like.device, dtype=like.dtype)
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
    return chol


def _smooth(mu: torch.Tensor, chol: torch.Tensor, lam: float) -> torch.Tensor:
    """(K + lam I)^-1 K mu = mu - lam (K + lam I)^-1 mu, with two triangular solves."""
    solved = torch.linalg.solve_triangular(chol, mu, upper=False)
    solved = torch.linalg.solve_triangular(chol.mT, solved, upper=True)
    return mu - lam * solved


_EXACT_SPREAD_MAX_N = 1024
"""Above this many subjects :func:`_kept_spread` estimates r (the exact inverse costs more than the factorisation)."""
_SPREAD_PROBES = 32


def _kept_spread(chol: torch.Tensor, lam: float) -> float:
    """``r = ||A||_F^2 / n`` for A = I - lam (K + lam I)^-1: the mean of (e / (e + lam))^2 over K's spectrum.

    Exact up to ``_EXACT_SPREAD_MAX_N`` subjects; above, Hutchinson's estimate ``mean ||A v||^2 / n``
    over 32 fixed Rademacher probes v (two triangular solves each, about 1 % relative error at
    n = 1024, less beyond) instead of an n^3 inverse.
    """
    n = chol.shape[0]
    if n <= _EXACT_SPREAD_MAX_N:
        a = -lam * torch.cholesky_inverse(chol)
        a.diagonal().add_(1.0)
        return float(a.square().sum()) / n
    generator = torch.Generator(device=chol.device).manual_seed(0)
    probes = torch.randint(0, 2, (n, _SPREAD_PROBES), generator=generator, device=chol.device).to(chol.dtype)
    probes = 2 * probes - 1
    return float(_smooth(probes, chol, lam).square().sum()) / (n * _SPREAD_PROBES)


def kept_spread(kernel: torch.Tensor, lam: float) -> float:
    """Share ``r = ||(K + lam I)^-1 K||_F^2 / n`` of an isotropic batch's squared spread that the ridge keeps.

    1 without a prior; ``w^2 / (w + lam)^2`` on the directions an instance term of weight w alone
    keeps. ``rescale=True`` in :func:`decoupled_uniformity` divides t by it.
    """
    lam = check_positive(lam, "lam")
    k = torch.as_tensor(kernel, dtype=torch.float64)
    return _kept_spread(_ridge_factor(k, k.shape[0], lam, k), lam)


@full_precision
def decoupled_uniformity(
    z: torch.Tensor,
    kernel: torch.Tensor | None = None,
    *,
    t: float = 2.0,
    lam: float = 0.01,
    gather: bool = False,
    rescale: bool = False,
) -> torch.Tensor:
    """Decoupled uniformity loss of z (n, V, d), optionally with a prior kernel K (n, n).

    Args:
        z: projector outputs, not normalised, (n subjects, V >= 2 views, d features).
        kernel: PSD kernel (n, n) on the subjects (treated as a constant) or None. With
            ``gather=True`` it must be the kernel of the *gathered* (global) batch.
        t: uniformity temperature (> 0).
        lam: kernel ridge regularisation (> 0); unused without a kernel.
        gather: all-gather z over the initialised process group first (no-op otherwise).
        rescale: with a kernel, use the temperature ``t / r`` (r: :func:`kept_spread` of the
            batch kernel, a constant), so the smoothed centroids are compared at DU's scale.

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
        chol = _ridge_factor(kernel, mu.shape[0], lam, mu)
        if rescale:
            t = t / max(_kept_spread(chol, lam), 1e-12)
        mu = _smooth(mu, chol, lam)
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
    False it is plain decoupled uniformity (the prior warm-up, ``prior.warmup_epochs``);
    ``rescale`` is :func:`decoupled_uniformity`'s (``prior.rescale_centroids``).
    """

    def __init__(self, kernel: PriorKernel, t: float = 2.0, lam: float = 0.01, gather: bool = False,
                 rescale: bool = False):
        if not callable(kernel):
            raise MedclInputError(f"kernel: expected a fitted medcl.kernels.PriorKernel, got {type(kernel).__name__}")
        super().__init__(gather, t=t, lam=lam)
        self.kernel = kernel
        self.rescale = bool(rescale)
        self.use_prior = True

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rescale={self.rescale}"

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
        return decoupled_uniformity(z, k, t=self.t, lam=self.lam, gather=False,
                                    rescale=self.rescale)  # checks n >= 2
