"""Supervised contrastive loss, SupCon (Khosla et al., NeurIPS 2020), the supervised upper bound.

All views of subjects with the same label are positives: anchor a has the loss
``mean_{p in P(a)} [ -s_ap + log sum_{b != a} exp(s_ab) ]`` (the "L_out" form), P(a) every other
view with a's label; the loss is the mean over anchors. With one label per subject it is NT-Xent.
(The original scales by temperature / base_temperature; with their defaults that ratio is 1.)
"""

from __future__ import annotations

import torch

from medcl.errors import MedclInputError
from medcl.losses._checks import check_per_subject, check_positive, check_views, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad, gather_optional
from medcl.losses.infonce import soft_target_infonce, view_similarities


@full_precision
def supcon(z: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.1, gather: bool = False) -> torch.Tensor:
    """SupCon loss of z (n, V, d) with integer class labels (n,), a scalar.

    Raises MedclInputError when z is not (n, V, d) with n, V >= 2, labels are not (n,) integers,
    or temperature is not > 0.
    """
    check_views(z, "z")
    temperature = check_positive(temperature, "temperature")
    labels = check_per_subject(labels, z.shape[0], "labels", integer=True)
    if gather:
        z = all_gather_with_grad(z)
        labels = gather_optional(labels, True)
    v = z.shape[1]
    lab = labels.to(z.device).repeat_interleave(v)
    positive = (lab[:, None] == lab[None, :]).fill_diagonal_(False)
    logits = view_similarities(z, temperature)
    weights = positive.to(logits.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return soft_target_infonce(logits, weights)


class SupConLoss(LossModule):
    """SupCon (method ``supervised``) on integer labels (n,). See :func:`supcon`."""

    def __init__(self, temperature: float = 0.1, gather: bool = False):
        super().__init__(gather, temperature=temperature)

    def forward(
        self,
        z: torch.Tensor,
        attributes: torch.Tensor | None = None,
        missing: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of z (n, V, d) with labels (n,) (or (n, 1)) integer classes; attributes ignored."""
        if labels is None:
            raise MedclInputError("labels: supervised needs integer class labels (n,), got None")
        labels = torch.as_tensor(labels)
        if labels.is_floating_point():
            if torch.isnan(labels).any() or (labels != labels.round()).any():
                raise MedclInputError("labels: expected integer class codes without missing values")
            labels = labels.long()
        return supcon(z, labels, temperature=self.temperature, gather=self.gather)
