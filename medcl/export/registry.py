"""The export formats: name -> module with ``SUFFIX``, ``write(module, doc, out, x)`` and ``load(path)``.

Add a format: one module beside this one with those three names, one entry in :data:`FORMATS`,
``ExportFormat`` and :data:`FORMAT_MODULES`, and a case in :func:`medcl.export.loader.load_encoder`
for its suffix.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

from medcl.export import bundle, onnx_file, safetensors_file, torch_export, torchscript

ExportFormat = Literal["bundle", "safetensors", "torch-export", "torchscript", "onnx"]
FORMATS: tuple[str, ...] = ("bundle", "safetensors", "torch-export", "torchscript", "onnx")

FORMAT_MODULES: dict[str, ModuleType] = {
    "bundle": bundle,
    "safetensors": safetensors_file,
    "torch-export": torch_export,
    "torchscript": torchscript,
    "onnx": onnx_file,
}
#: file extension written per file format (a bundle is a folder)
_SUFFIX = {name: module.SUFFIX for name, module in FORMAT_MODULES.items() if module.SUFFIX}
#: extensions read as TorchScript
_TORCHSCRIPT_SUFFIXES = torchscript.SUFFIXES
