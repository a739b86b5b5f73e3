"""Alignment + uniformity (Wang & Isola, ICML 2020), multi-view.

``align = mean over subjects and view pairs v < v' of ||z_i^v - z_i^v'||^alpha`` and
``uniform = mean over views v of log mean_{i<j} exp(-t ||z_i^v - z_j^v||^2)`` on L2-normalised
views; the loss is ``align_weight * align + uniform_weight * uniform`` (with V = 2 and unit
weights this is the official ``align_loss(x, y) + (uniform_loss(x) + uniform_loss(y)) / 2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medcl.losses._checks import check_positive, check_views, full_precision
from medcl.losses._pairwise import log_mean_gaussian_potential
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad


@full_precision
def align_uniform(
    z: torch.Tensor,
    *,
    alpha: float = 2.0,
    t: float = 2.0,
    align_weight: float = 1.0,
    uniform_weight: float = 1.0,
    gather: bool = False,
) -> torch.Tensor:
    """Alignment + uniformity loss of z (n, V, d), a scalar.

    Raises MedclInputError when z is not (n, V, d) with n, V >= 2 or a parameter is not > 0.
    """
    check_views(z, "z")
    alpha = check_positive(alpha, "alpha")
    t = check_positive(t, "t")
    align_weight = check_positive(align_weight, "align_weight")
    uniform_weight = check_positive(uniform_weight, "uniform_weight")
    if gather:
        z = all_gather_with_grad(z)
    x = F.normalize(z, dim=-1)
    v = x.shape[1]
    first, second = torch.triu_indices(v, v, offset=1, device=x.device)
    diff = x[:, first] - x[:, second]  # (n, V(V-1)/2, d), tiny for the usual V
    sq = (diff * diff).sum(dim=-1)
    align = sq.mean() if alpha == 2.0 else sq.clamp_min(0).pow(alpha / 2).mean()
    uniform = torch.stack([log_mean_gaussian_potential(x[:, k], t) for k in range(v)]).mean()
    return align_weight * align + uniform_weight * uniform


class AlignUniformLoss(LossModule):
    """Alignment + uniformity (method ``align_uniform``). See :func:`align_uniform`."""

    loss_function = staticmethod(align_uniform)

    def __init__(
        self,
        alpha: float = 2.0,
        t: float = 2.0,
        align_weight: float = 1.0,
        uniform_weight: float = 1.0,
        gather: bool = False,
    ):
        super().__init__(gather, alpha=alpha, t=t, align_weight=align_weight, uniform_weight=uniform_weight)
