"""Format ``onnx``: an ONNX graph (``.onnx``, dynamo exporter), run with onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcl.errors import MedclInputError
from medcl.export.format import ExportFormat

if TYPE_CHECKING:
    import torch
    from torch import nn


def load(path: Path) -> nn.Module:
    from medcl.export.frozen import ExportedEncoder, OnnxEncoder
    from medcl.models.saved import METADATA_KEY, parse_document

    try:
        runner = OnnxEncoder(path)
    except Exception as err:  # onnxruntime raises its own exception types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedclInputError(f"{path}: not a loadable ONNX model ({first})") from None
    meta = runner.session.get_modelmeta().custom_metadata_map
    doc = parse_document(meta.get(METADATA_KEY), path)
    return ExportedEncoder(runner, doc, FORMAT.name)


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    import logging
    import warnings

    import onnx
    import torch

    from medcl.models.saved import METADATA_KEY

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


FORMAT = ExportFormat(name="onnx", summary="", expected=".onnx", write=write, load=load, suffixes=(".onnx",))
