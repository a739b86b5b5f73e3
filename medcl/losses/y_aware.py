"""y-Aware InfoNCE (Dufumier et al., MICCAI 2021), multi-view.

Every other view b is a positive of anchor a with weight ``w_ab = k(y_a, y_b) / sum_{c != a}
k(y_a, y_c)``, k the RBF kernel ``exp(-(y_a - y_b)^2 / (2 sigma^2))`` on a continuous attribute y
(views inherit their subject's y). The weights are normalised per anchor over its non-self
candidates (the public implementations normalise along the other axis). The loss is
``mean_a sum_b w_ab (-s_ab + log sum_{c != a} exp(s_ac))``. When y is missing for the anchor or
the candidate, k is 1 for views of the same subject and 0 otherwise (NT-Xent rows). With
sigma -> 0 and distinct y the weights select the subject's own views: NT-Xent.

Choosing sigma. The paper uses a fixed sigma in the attribute's units: 5 years for age
(``sigma = 5``, temperature 0.1, in the official code's config), on a pretraining cohort aged
32 +- 19 years, i.e. sigma about a quarter of the attribute's standard deviation. medcl's rule
for any continuous attribute (:func:`y_aware_sigma`): ``sigma = 0.25 x`` the attribute's
standard deviation over the training split (``loss.y_aware_sigma_scale``), unless ``loss.sigma``
gives it; the value used is saved in the run's resolved config. A wide sigma (such as the
median-heuristic bandwidth, about 15 years for age) makes the weights nearly uniform over the
batch, and the loss's optimum is then the collapsed embedding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medcl.errors import MedclInputError
from medcl.losses._checks import check_per_subject, check_positive, check_views, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad, gather_optional
from medcl.losses.infonce import soft_target_infonce, view_similarities

SIGMA_SCALE = 0.25
"""Default sigma / std(attribute on the training split); the paper's 5 years / 19 years."""


def y_aware_sigma(values: np.ndarray, scale: float = SIGMA_SCALE) -> float:
    """The y-Aware bandwidth for an attribute: ``scale x`` its standard deviation (NaN ignored).

    ``values`` are the attribute over the training split (1-D, in the attribute's units).
    Raises MedclInputError when fewer than two values are present or they are all equal.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    scale = check_positive(scale, "y_aware_sigma_scale")
    if x.size < 2:
        raise MedclInputError(f"y_aware sigma: need at least 2 known values of the attribute, got {x.size}")
    std = float(x.std(ddof=1))
    if not std > 0:
        raise MedclInputError("y_aware sigma: the attribute is constant on the training split; set loss.sigma")
    return scale * std


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

    def collapse_value(self, n: int, views: int) -> float:
        """``log(nV - 1)``: all logits equal (whatever the positives' weights)."""
        return math.log(n * views - 1)

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
