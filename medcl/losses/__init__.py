"""Pretraining losses: decoupled uniformity (with or without a prior kernel) and baselines.

Every loss is a pure function of z (n subjects, V views, d features), not yet normalised, plus a
thin ``nn.Module`` whose ``forward(z, attributes=None, missing=None, labels=None)`` has the same
signature for all methods; :mod:`medcl.losses.registry` holds one record per method (its module,
what it reads, its options) and :func:`build_loss` maps a method name to its module. Every function
and module takes ``gather`` to compute the loss on the global batch under ``torch.distributed``
(see :mod:`medcl.losses.distributed` for the DDP gradient convention). The supervised upper
bound (:mod:`medcl.losses.supervised`) has the same interface: its z is a linear head's output.
"""

from medcl.losses.align_uniform import AlignUniformLoss, align_uniform
from medcl.losses.dcl import DecoupledContrastiveLoss, decoupled_contrastive
from medcl.losses.decoupled_uniformity import (
    DecoupledUniformityLoss,
    KernelDecoupledUniformityLoss,
    decoupled_uniformity,
    kept_spread,
)
from medcl.losses.infonce import InfoNCELoss, nt_xent
from medcl.losses.registry import (
    METHODS,
    MethodRecord,
    build_loss,
    method_names,
    method_record,
    register_method,
)
from medcl.losses.supcon import SupConLoss, supcon
from medcl.losses.supervised import SupervisedLoss, view_cross_entropy, view_regression
from medcl.losses.y_aware import YAwareInfoNCELoss, y_aware_infonce

infonce = nt_xent

__all__ = [
    "METHODS",
    "AlignUniformLoss",
    "DecoupledContrastiveLoss",
    "DecoupledUniformityLoss",
    "InfoNCELoss",
    "KernelDecoupledUniformityLoss",
    "MethodRecord",
    "SupConLoss",
    "SupervisedLoss",
    "YAwareInfoNCELoss",
    "align_uniform",
    "build_loss",
    "decoupled_contrastive",
    "decoupled_uniformity",
    "infonce",
    "kept_spread",
    "method_names",
    "method_record",
    "nt_xent",
    "register_method",
    "supcon",
    "view_cross_entropy",
    "view_regression",
    "y_aware_infonce",
]
