"""Supervised contrastive loss, SupCon (Khosla et al., NeurIPS 2020): method ``supcon``.

All views of subjects with the same label are positives: anchor a has the loss
``mean_{p in P(a)} [ -s_ap + log sum_{b != a} exp(s_ab) ]`` (the "L_out" form), P(a) every other
view with a's label; the loss is the mean over anchors. With one label per subject it is NT-Xent.
(The original scales by temperature / base_temperature; with their defaults that ratio is 1.)

Instance mix. When the label is barely visible in the images (small lesions, a noisy diagnosis),
an encoder cannot bring same-label subjects together, the positives' mean similarity equals the
batch's, and the loss's minimum is the collapsed embedding (``log(nV - 1)``, every scan
identical; measured on the demo cohort). ``instance_mix`` m mixes in NT-Xent on the same logits:
the positives' weights become ``(1 - m) * same-label + m * own-views`` (each normalised per
anchor), i.e. the loss is ``(1 - m) * SupCon + m * NT-Xent`` (SupConLoss with ``instance_mix=0``
is plain SupCon, with 1 it is SimCLR). Each scan then keeps its own direction while the label
pulls the classes apart.
"""

from __future__ import annotations

import math

import torch

from medcl.errors import MedclInputError
from medcl.losses._checks import check_per_subject, check_positive, check_views, class_codes, full_precision
from medcl.losses.base import LossModule
from medcl.losses.distributed import all_gather_with_grad, gather_optional
from medcl.losses.infonce import soft_target_infonce, view_similarities


def check_mix(value: float, name: str = "instance_mix") -> float:
    """``value`` as a float in [0, 1]; MedclInputError naming ``name`` otherwise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MedclInputError(f"{name}: expected a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise MedclInputError(f"{name}: expected a number in [0, 1], got {value}")
    return value


@full_precision
def supcon(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.1,
    instance_mix: float = 0.0,
    gather: bool = False,
) -> torch.Tensor:
    """SupCon loss of z (n, V, d) with integer class labels (n,), a scalar.

    ``instance_mix`` in [0, 1] weights NT-Xent into it (see the module docstring).
    Raises MedclInputError when z is not (n, V, d) with n, V >= 2, labels are not (n,) integers,
    temperature is not > 0 or instance_mix is outside [0, 1].
    """
    check_views(z, "z")
    temperature = check_positive(temperature, "temperature")
    instance_mix = check_mix(instance_mix)
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
    if instance_mix > 0:
        subject = torch.arange(z.shape[0], device=z.device).repeat_interleave(v)
        own = (subject[:, None] == subject[None, :]).fill_diagonal_(False).to(logits.dtype) / (v - 1)
        weights = (1.0 - instance_mix) * weights + instance_mix * own
    return soft_target_infonce(logits, weights)


class SupConLoss(LossModule):
    """SupCon (method ``supcon``) on integer labels (n,). See :func:`supcon`."""

    def __init__(self, temperature: float = 0.1, instance_mix: float = 0.0, gather: bool = False):
        super().__init__(gather, temperature=temperature)
        self.instance_mix = check_mix(instance_mix)

    def collapse_value(self, n: int, views: int) -> float:
        """``log(nV - 1)``: all logits equal (whatever the positives' weights)."""
        return math.log(n * views - 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, instance_mix={self.instance_mix}"

    def forward(
        self,
        z: torch.Tensor,
        attributes: torch.Tensor | None = None,
        missing: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of z (n, V, d) with labels (n,) (or (n, 1)) integer classes; attributes ignored."""
        if labels is None:
            raise MedclInputError("labels: supcon needs integer class labels (n,), got None")
        return supcon(z, class_codes(labels), temperature=self.temperature, instance_mix=self.instance_mix,
                      gather=self.gather)
