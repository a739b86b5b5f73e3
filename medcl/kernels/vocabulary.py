"""The prior kernels' names and defaults, in one place and without torch.

The manifest (which kernel an attribute uses), the pretraining config (``prior.*``), the kernels
themselves and the CLI's ``medcl attributes`` options all read these, and ``medcl --help`` imports
this module without loading torch.
"""

from __future__ import annotations

from typing import Literal, get_args

KernelKind = Literal["rbf", "delta", "cosine"]
CombineMode = Literal["product", "sum"]
BandwidthRule = Literal["per_attribute", "joint"]

KERNEL_KINDS: tuple[str, ...] = get_args(KernelKind)
COMBINE_MODES: tuple[str, ...] = get_args(CombineMode)
BANDWIDTH_RULES: tuple[str, ...] = get_args(BandwidthRule)

DEFAULT_INSTANCE_WEIGHT = 0.03
"""``prior.instance_weight``: w in K = (1-w) K_attr + w I (kernel DU)."""
DEFAULT_BANDWIDTH_RULE: BandwidthRule = "joint"
"""``prior.bandwidth_rule``: a product kernel's median heuristic on the joint attribute vector."""
DEFAULT_RESCALE_CENTROIDS = True
"""``prior.rescale_centroids``: compare the kernel-smoothed centroids at DU's scale."""
