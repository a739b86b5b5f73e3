"""``build_loss(method, **options)``: one name selects the pretraining loss."""

from __future__ import annotations

import inspect

from torch import nn

from medcl.errors import MedclInputError
from medcl.losses.align_uniform import AlignUniformLoss
from medcl.losses.dcl import DecoupledContrastiveLoss
from medcl.losses.decoupled_uniformity import DecoupledUniformityLoss, KernelDecoupledUniformityLoss
from medcl.losses.infonce import InfoNCELoss
from medcl.losses.supcon import SupConLoss
from medcl.losses.supervised import SupervisedLoss
from medcl.losses.y_aware import YAwareInfoNCELoss

_LOSSES: dict[str, type[nn.Module]] = {
    "kernel_du": KernelDecoupledUniformityLoss,
    "du": DecoupledUniformityLoss,
    "simclr": InfoNCELoss,
    "y_aware": YAwareInfoNCELoss,
    "dcl": DecoupledContrastiveLoss,
    "align_uniform": AlignUniformLoss,
    "supervised": SupervisedLoss,
    "supcon": SupConLoss,
}

LOSS_METHODS: tuple[str, ...] = tuple(_LOSSES)
"""Names accepted by :func:`build_loss`."""


def build_loss(method: str, **options: object) -> nn.Module:
    """Build the loss module for ``method`` (one of :data:`LOSS_METHODS`) with its options.

    ``kernel_du`` needs ``kernel=`` (a fitted PriorKernel), ``y_aware`` needs ``sigma=``.
    Every module takes ``gather=``. Raises MedclInputError for an unknown method, an unknown
    or missing option, or an invalid value.
    """
    if method not in _LOSSES:
        raise MedclInputError(f"method: unknown loss {method!r}; expected one of {', '.join(LOSS_METHODS)}")
    cls = _LOSSES[method]
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise MedclInputError(
            f"method {method!r}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    required = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in options]
    if required:
        raise MedclInputError(f"method {method!r}: missing required option(s) {', '.join(required)}")
    return cls(**options)
