"""Format ``onnx``: an ONNX graph (``.onnx``, dynamo exporter), run with onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcl.errors import MedclInputError
from medcl.export.frozen import ExportedEncoder
from medcl.models.saved import (
    METADATA_KEY,
    parse_document,
)

SUFFIX = ".onnx"


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


def load(path: Path) -> nn.Module:
    try:
        runner = OnnxEncoder(path)
    except Exception as err:  # onnxruntime raises its own exception types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedclInputError(f"{path}: not a loadable ONNX model ({first})") from None
    meta = runner.session.get_modelmeta().custom_metadata_map
    doc = parse_document(meta.get(METADATA_KEY), path)
    return ExportedEncoder(runner, doc, "onnx")


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    import logging
    import warnings

    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = io.StringIO()
    # The dynamo exporter prints progress and warns about absent torchvision ops: keep it quiet.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (x,),
                str(out),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=["image"],
                output_names=["features"],
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    model = onnx.load(str(out))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(doc)
    onnx.save(model, str(out))
    return [out]
