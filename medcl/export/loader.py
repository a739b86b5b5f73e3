"""Load an encoder exported by medcl, in any format, or a run directory's: :func:`load_encoder`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from medcl.errors import MedclInputError
from medcl.export.registry import _TORCHSCRIPT_SUFFIXES, FORMAT_MODULES
from medcl.export.torch_export import _zip_names
from medcl.models.saved import (
    MODEL_WEIGHTS,
    load_diagnosis_model,
    load_safetensors,
)
from medcl.pretrain.run_dir import RunDir


def _sniff(path: Path) -> str:
    """Guess a file's format from its content (for unknown suffixes)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        names = _zip_names(path)
        if any(n.endswith("model_weights_config.json") for n in names):
            return "torch-export"
        if any("/code/" in n for n in names):
            return "torchscript"
    if len(head) >= 8 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{":
        return "safetensors"
    raise MedclInputError(
        f"{path}: unknown encoder format; expected a bundle folder, .safetensors (+ .json), .pt2, "
        ".pt (TorchScript) or .onnx"
    )


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """Load an encoder exported by medcl (any format) for inference or fine-tuning.

    Accepts a MONAI bundle folder, a run directory (its ``encoder.safetensors``), a diagnosis
    model folder (``medcl finetune --out``; the model then gives class probabilities), a
    ``.safetensors`` file (with its ``.json`` sidecar or embedded metadata), a ``torch.export``
    ``.pt2``, a TorchScript ``.pt`` / ``.ts`` or an ``.onnx`` file (run by onnxruntime).

    Returns:
        An ``nn.Module`` in eval mode mapping ``(n, C, *size)`` images to ``(n, out_features)``,
        with ``.input_spec`` (channels, spatial dims, size, spacing, intensity) and
        ``.out_features``. Bundle / safetensors give a trainable :class:`medcl.models.Encoder`;
        the other formats a frozen graph.

    Raises:
        MedclInputError: the path is missing, corrupted, or not a medcl encoder (names the file).

    Only load TorchScript from a trusted source: ``torch.jit.load`` executes the file's code.
    """
    path = Path(path)
    if not path.exists():
        raise MedclInputError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "configs" / "metadata.json").is_file():
            return FORMAT_MODULES["bundle"].load(path)
        if (run := RunDir(path)).encoder_weights.is_file():
            return load_safetensors(run.encoder_weights, run.encoder_json)
        if (path / MODEL_WEIGHTS).is_file():
            return load_diagnosis_model(path)
        raise MedclInputError(
            f"{path}: a folder, but neither a MONAI bundle (configs/metadata.json), a run directory "
            f"({RunDir.ENCODER_WEIGHTS}) nor a diagnosis model ({MODEL_WEIGHTS})"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        fmt = "safetensors"
    elif suffix == ".pt2":
        fmt = "torch-export"
    elif suffix in _TORCHSCRIPT_SUFFIXES:
        fmt = "torchscript"
    elif suffix == ".onnx":
        fmt = "onnx"
    else:
        fmt = _sniff(path)
    return FORMAT_MODULES[fmt].load(path)
