"""InfoNCE / NT-Xent (SimCLR), multi-view: every other view of the same subject is a positive.

For the nV L2-normalised views with similarities ``s_ab = <z_a, z_b> / temperature``, anchor a
(subject i) has the loss ``mean_{p in P(a)} [ -s_ap + log sum_{b != a} exp(s_ab) ]``, P(a) the V-1
other views of subject i; the loss is the mean over anchors. With V = 2 this is SimCLR's NT-Xent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medcl.losses._checks import check_positive, check_views, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad


def view_similarities(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Similarity logits (nV, nV) of the L2-normalised views, rows ordered subject-major (i*V + v)."""
    n, v, d = z.shape
    flat = F.normalize(z, dim=-1).reshape(n * v, d)
    return (flat @ flat.T).div_(temperature)


def log_partition(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """Row-wise ``log sum_b exp(logits_ab)`` over the entries where ``exclude`` is False."""
    return torch.logsumexp(logits.masked_fill(exclude, -math.inf), dim=1)


def mean_positive_logit(logits: torch.Tensor, n: int, v: int) -> torch.Tensor:
    """For each anchor (nV,), the mean logit over the V-1 other views of its own subject."""
    blocks = torch.diagonal(logits.view(n, v, n, v), dim1=0, dim2=2)  # (V, V, n): [v, v', i]
    own = torch.diagonal(blocks, dim1=0, dim2=1)  # (n, V): self-similarities
    return ((blocks.sum(dim=1).T - own) / (v - 1)).reshape(n * v)


def soft_target_infonce(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over anchors of ``sum_b w_ab (-logits_ab + log sum_{c != a} exp(logits_ac))``.

    ``weights`` (N, N) has a zero diagonal and rows summing to 1 (the positives' distribution).
    """
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return (log_partition(logits, eye) - (weights * logits).sum(dim=1)).mean()


@full_precision
def nt_xent(z: torch.Tensor, *, temperature: float = 0.1, gather: bool = False) -> torch.Tensor:
    """Multi-view NT-Xent (SimCLR InfoNCE) of z (n, V, d), a scalar.

    Raises MedclInputError when z is not (n, V, d) with n, V >= 2 or temperature is not > 0.
    """
    check_views(z, "z")
    temperature = check_positive(temperature, "temperature")
    if gather:
        z = all_gather_with_grad(z)
    n, v, _ = z.shape
    logits = view_similarities(z, temperature)
    eye = torch.eye(n * v, dtype=torch.bool, device=z.device)
    return (log_partition(logits, eye) - mean_positive_logit(logits, n, v)).mean()


class InfoNCELoss(LossModule):
    """NT-Xent / SimCLR InfoNCE (method ``simclr``). See :func:`nt_xent`."""

    loss_function = staticmethod(nt_xent)

    def __init__(self, temperature: float = 0.1, gather: bool = False):
        super().__init__(gather, temperature=temperature)

    def collapse_value(self, n: int, views: int) -> float:
        """``log(nV - 1)``: all logits equal, the positive is one of nV - 1 equal candidates."""
        return math.log(n * views - 1)
