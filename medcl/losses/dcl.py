"""Decoupled contrastive loss, DCL (Yeh et al., ECCV 2022), multi-view.

Like NT-Xent, but the positives are removed from the denominator: anchor a of subject i has the
loss ``-mean_{p in P(a)} s_ap + log sum_{b: other subjects} exp(s_ab)``, s the cosine similarity
over the temperature, P(a) the V-1 other views of subject i; the loss is the mean over anchors.
"""

from __future__ import annotations

import math

import torch

from medcl.losses._checks import check_positive, check_views, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad
from medcl.losses.infonce import log_partition, mean_positive_logit, view_similarities


@full_precision
def decoupled_contrastive(z: torch.Tensor, *, temperature: float = 0.1, gather: bool = False) -> torch.Tensor:
    """DCL loss of z (n, V, d), a scalar.

    Raises MedclInputError when z is not (n, V, d) with n, V >= 2 or temperature is not > 0.
    """
    check_views(z, "z")
    temperature = check_positive(temperature, "temperature")
    if gather:
        z = all_gather_with_grad(z)
    n, v, _ = z.shape
    logits = view_similarities(z, temperature)
    subject = torch.arange(n, device=z.device).repeat_interleave(v)
    same_subject = subject[:, None] == subject[None, :]
    return (log_partition(logits, same_subject) - mean_positive_logit(logits, n, v)).mean()


class DecoupledContrastiveLoss(LossModule):
    """DCL (method ``dcl``). See :func:`decoupled_contrastive`."""

    loss_function = staticmethod(decoupled_contrastive)

    def __init__(self, temperature: float = 0.1, gather: bool = False):
        super().__init__(gather, temperature=temperature)

    def collapse_value(self, n: int, views: int) -> float:
        """``log(nV - V)``: all logits equal over the other subjects' views."""
        return math.log(n * views - views)
