"""The shell every loss module shares: validated hyper-parameters and one call signature.

A training config switches method by name, so every module is called the same way:
``forward(z, attributes=None, missing=None, labels=None)``. A module whose loss needs only the
views names its pure function in ``loss_function``; the others override :meth:`forward`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from medcl.losses._checks import check_positive


class LossModule(nn.Module):
    """Base of medcl's loss modules.

    Args:
        gather: compute the loss on the global batch under ``torch.distributed``.
        **hyper_parameters: positive numbers (``t``, ``temperature``, ...), checked once here and
            stored as attributes of the same name.
    """

    loss_function: ClassVar[Callable[..., torch.Tensor] | None] = None

    def __init__(self, gather: bool = False, **hyper_parameters: float):
        super().__init__()
        for name, value in hyper_parameters.items():
            setattr(self, name, check_positive(value, name))
        self.hyper_parameters = tuple(hyper_parameters)
        self.gather = bool(gather)

    def forward(
        self,
        z: torch.Tensor,
        attributes: torch.Tensor | None = None,
        missing: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of z (n, V, d); this default uses the views only (attributes, missing, labels ignored)."""
        if type(self).loss_function is None:
            raise NotImplementedError(f"{type(self).__name__} must set loss_function or override forward")
        options = {name: getattr(self, name) for name in self.hyper_parameters}
        return type(self).loss_function(z, **options, gather=self.gather)

    def collapse_value(self, n: int, views: int) -> float:
        """The loss of a batch of n subjects x ``views`` views whose embeddings all coincide.

        A training loss stuck there means the run collapsed (:mod:`medcl.pretrain.health`). This
        default is the uniformity losses' value, ``log mean exp(-t * 0) = 0``; InfoNCE-type losses
        override it (``log(nV - 1)``: every logit equal).
        """
        return 0.0

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in (*self.hyper_parameters, "gather"))
