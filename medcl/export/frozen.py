"""An exported graph (torch.export, TorchScript, ONNX) behind the encoder interface (frozen, inference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class ExportedEncoder(nn.Module):
    """An exported encoder wrapped for inference: ``forward(x) -> (n, out_features)``.

    Attributes: ``input_spec`` (dict: channels, spatial dims, size, spacing, intensity),
    ``out_features`` (int) and ``metadata`` (the full medcl document).
    """

    def __init__(self, module: nn.Module, document: dict[str, Any], fmt: str):
        super().__init__()
        self.module = module
        self.metadata = document
        self.input_spec = dict(document["input"])
        self.out_features = document.get("out_features")
        self.format = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def train(self, mode: bool = True) -> ExportedEncoder:
        # Traced / exported graphs are frozen in inference mode; keep the flag for callers.
        self.training = mode
        return self


class OnnxEncoder(nn.Module):
    """Run an ONNX encoder with onnxruntime behind an ``nn.Module`` interface (inference only)."""

    def __init__(self, path: str | Path, providers: list[str] | None = None):
        super().__init__()
        import onnxruntime as ort

        self.path = str(path)
        self.session = ort.InferenceSession(self.path, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)
