"""Heads on an encoder: the projection head (pretraining) and the diagnosis model (encoder + linear head).

:class:`DiagnosisModel` is what ``medcl finetune`` trains and saves: images in, class
probabilities (or the value in label units) out, so that every export format carries a model a
hospital can run without medcl's label bookkeeping.
"""

from __future__ import annotations

import torch
from torch import nn

from medcl.models.encoders import ProjectionHead

__all__ = ["LABEL_KINDS", "DiagnosisModel", "ProjectionHead"]

LABEL_KINDS = ("binary", "multiclass", "continuous")


class DiagnosisModel(nn.Module):
    """Encoder + linear head.

    ``logits(x)``: the head's raw output, ``(n, 1)`` (binary, continuous standardised) or ``(n, K)``.
    ``forward(x)``: binary ``(n, 2)`` probabilities ``[1 - p, p]``; multiclass ``(n, K)`` softmax;
    continuous ``(n, 1)`` in label units (``target_mean + target_std * logit``).
    """

    def __init__(self, encoder: nn.Module, kind: str, n_classes: int = 2, *,
                 target_mean: float = 0.0, target_std: float = 1.0) -> None:
        super().__init__()
        if kind not in LABEL_KINDS:
            raise ValueError(f"kind must be one of {LABEL_KINDS}, got {kind!r}")
        if kind == "multiclass" and n_classes < 2:
            raise ValueError(f"a multiclass model needs n_classes >= 2, got {n_classes}")
        self.encoder = encoder
        self.kind = kind
        self.head = nn.Linear(int(encoder.out_features), n_classes if kind == "multiclass" else 1)
        self.out_features = {"binary": 2, "multiclass": n_classes, "continuous": 1}[kind]
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(self.logits(x))

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        """Probabilities (or values in label units) from the head's logits."""
        if self.kind == "binary":
            p = torch.sigmoid(out)
            return torch.cat([1.0 - p, p], dim=1)
        if self.kind == "multiclass":
            return torch.softmax(out, dim=1)
        return out * self.target_std + self.target_mean
