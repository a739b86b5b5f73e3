"""y-Aware InfoNCE (Dufumier et al., MICCAI 2021), multi-view.

Every other view b is a positive of anchor a with weight ``w_ab = k(y_a, y_b) / sum_{c != a}
k(y_a, y_c)``, k the RBF kernel ``exp(-(y_a - y_b)^2 / (2 sigma^2))`` on a continuous attribute y
(views inherit their subject's y). The weights are normalised per anchor over its non-self
candidates (the public implementations normalise along the other axis). The loss is
``mean_a sum_b w_ab (-s_ab + log sum_{c != a} exp(s_ac))``. When y is missing for the anchor or
the candidate, k is 1 for views of the same subject and 0 otherwise (NT-Xent rows). With
sigma -> 0 and distinct y the weights select the subject's own views: NT-Xent.
"""

from __future__ import annotations

import torch

from medcl.errors import MedclInputError
from medcl.losses._checks import check_per_subject, check_positive, check_views, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad, gather_optional
from medcl.losses.infonce import soft_target_infonce, view_similarities


def y_aware_weights(y: torch.Tensor, missing: torch.Tensor | None, views: int, sigma: float) -> torch.Tensor:
    """Positive weights (nV, nV): RBF on y, same-subject rows where y is missing, rows sum to 1."""
    n = y.shape[0]
    y = y.detach().to(torch.float64)
    absent = torch.isnan(y)
    if missing is not None:
        absent = absent | missing.to(device=y.device, dtype=torch.bool)
    yv = torch.where(absent, torch.zeros_like(y), y).repeat_interleave(views)
    present = (~absent).repeat_interleave(views)
    subject = torch.arange(n, device=y.device).repeat_interleave(views)
    same = subject[:, None] == subject[None, :]
    rbf = torch.exp(-((yv[:, None] - yv[None, :]) ** 2) / (2.0 * sigma**2))
    k = torch.where(present[:, None] & present[None, :], rbf, same.to(rbf.dtype))
    k.fill_diagonal_(0.0)
    return k / k.sum(dim=1, keepdim=True)


@full_precision
def y_aware_infonce(
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    temperature: float = 0.1,
    missing: torch.Tensor | None = None,
    gather: bool = False,
) -> torch.Tensor:
    """y-Aware InfoNCE of z (n, V, d) with attribute y (n,) (NaN or ``missing`` (n,) = unknown).

    Raises MedclInputError when z is not (n, V, d) with n, V >= 2, y or missing is not (n,),
    or sigma / temperature is not > 0.
    """
    check_views(z, "z")
    sigma = check_positive(sigma, "sigma")
    temperature = check_positive(temperature, "temperature")
    y = check_per_subject(y, z.shape[0], "y")
    if missing is not None:
        missing = check_per_subject(missing, z.shape[0], "missing")
    if gather:
        z = all_gather_with_grad(z)
        y = gather_optional(y, True)
        missing = gather_optional(missing, True)
    logits = view_similarities(z, temperature)
    weights = y_aware_weights(y.to(z.device), missing, z.shape[1], sigma).to(logits.dtype)
    return soft_target_infonce(logits, weights)


class YAwareInfoNCELoss(LossModule):
    """y-Aware InfoNCE (method ``y_aware``) on the first attribute column (continuous)."""

    def __init__(self, sigma: float, temperature: float = 0.1, gather: bool = False):
        super().__init__(gather, sigma=sigma, temperature=temperature)

    def forward(
        self,
        z: torch.Tensor,
        attributes: torch.Tensor | None = None,
        missing: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of z (n, V, d) with y = attributes[:, 0] and missing[:, 0]; labels are ignored."""
        if attributes is None:
            raise MedclInputError("attributes: y_aware needs the (n, p) attribute matrix, got None")
        attributes = torch.as_tensor(attributes)
        if attributes.dim() == 1:
            attributes = attributes[:, None]
        if attributes.dim() != 2 or attributes.shape[1] < 1:
            raise MedclInputError(f"attributes: expected shape (n, p) with p >= 1, got {tuple(attributes.shape)}")
        miss = None
        if missing is not None:
            missing = torch.as_tensor(missing)
            miss = missing[:, 0] if missing.dim() == 2 else missing
        return y_aware_infonce(
            z,
            attributes[:, 0],
            sigma=self.sigma,
            temperature=self.temperature,
            missing=miss,
            gather=self.gather,
        )
