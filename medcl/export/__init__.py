"""Export a pretrained encoder and load it back, in any of five formats.

Formats (``fmt``; the table is :mod:`medcl.export.registry`, one record per format module):

* ``bundle``: a MONAI bundle folder: ``configs/metadata.json`` (MONAI's mandatory keys plus a
  ``medcl`` block: input spec, output size, method, attributes, training-cohort summary, never a
  subject or patient id), ``configs/inference.json`` (a ``ConfigParser`` config that rebuilds the
  network and its preprocessing), ``models/model.safetensors`` (+ ``models/model.pt``, the plain
  state dict MONAI's tools expect; load it with ``weights_only=True``) and ``docs/README.md``.
* ``safetensors``: ``NAME.safetensors`` (weights) + ``NAME.json`` (architecture and input spec).
* ``torch-export``: a ``torch.export`` program (``.pt2``), batch dimension dynamic.
* ``torchscript``: a traced TorchScript module (``.pt``).
* ``onnx``: an ONNX graph (``.onnx``, dynamo exporter), run with onnxruntime.

Every export is checked before it appears: the artifact is written to a temporary sibling, loaded
back with :func:`load_encoder` and its features compared with the in-memory encoder on a probe
input (``atol=1e-4``); only then is it renamed into place.

Trust: safetensors and bundles hold only tensors and JSON (the safe choice for sharing). medcl
never unpickles: ``torch.load`` is only called with ``weights_only=True`` and a ``.pt2`` archive
holding pickled payloads is refused. A TorchScript file, however, is *code* that
``torch.jit.load`` runs: only load TorchScript from a source you trust (TorchScript is also
deprecated in recent torch releases; prefer ``torch-export`` for a compiled graph).

Example (a diagnosis model in three lines)::

    encoder = medcl.load_encoder("exports/encoder_bundle")
    model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_features, 2))
    logits = model(images)  # images: (n, *encoder.input_spec shape)

The names below load on first use, so ``medcl --help`` can read the format table without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "medcl.export.bundle": ("bundle_inference_config", "bundle_metadata", "check_bundle_metadata"),
    "medcl.export.format": ("ExportFormat", "Sidecar"),
    "medcl.export.frozen": ("ExportedEncoder", "OnnxEncoder"),
    "medcl.export.loader": ("load_encoder",),
    "medcl.export.registry": ("FORMATS", "export_formats", "format_names", "get_format", "registered"),
    "medcl.export.roundtrip": ("ExportCheckError", "default_export_path", "export_module", "with_format_suffix"),
    "medcl.export.run": ("export_diagnosis_model", "export_encoder", "run_training_info"),
    "medcl.models.saved": ("ENCODER_FORMAT", "FORMAT_VERSION", "METADATA_KEY", "encoder_document", "input_shape"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'medcl.export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
