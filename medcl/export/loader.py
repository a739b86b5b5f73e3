"""Load an encoder exported by medcl, in any format, or a run directory's: :func:`load_encoder`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from medcl.errors import MedclInputError
from medcl.export.format import ExportFormat
from medcl.export.registry import export_formats, format_for_suffix
from medcl.models.saved import (
    MODEL_WEIGHTS,
    load_diagnosis_model,
    load_safetensors,
)
from medcl.pretrain.run_dir import RunDir


def _sniff(path: Path) -> ExportFormat:
    """Guess a file's format from its content (for unknown suffixes), asking each format in table order."""
    for fmt in export_formats():
        if not fmt.folder and fmt.sniff is not None and fmt.sniff(path):
            return fmt
    *others, last = [fmt.expected for fmt in export_formats()]
    expected = f"{', '.join(others)} or {last}" if others else last
    raise MedclInputError(f"{path}: unknown encoder format; expected {expected}")


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
        folders = [fmt for fmt in export_formats() if fmt.folder]
        for fmt in folders:
            if fmt.sniff is not None and fmt.sniff(path):
                return fmt.load(path)
        if (run := RunDir(path)).encoder_weights.is_file():
            return load_safetensors(run.encoder_weights, run.encoder_json)
        if (path / MODEL_WEIGHTS).is_file():
            return load_diagnosis_model(path)
        bundles = "".join(f"a {fmt.title} ({fmt.marker}), " for fmt in folders)
        raise MedclInputError(
            f"{path}: a folder, but neither {bundles}a run directory "
            f"({RunDir.ENCODER_WEIGHTS}) nor a diagnosis model ({MODEL_WEIGHTS})"
        )
    fmt = format_for_suffix(path.suffix) or _sniff(path)
    return fmt.load(path)
