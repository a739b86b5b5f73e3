"""Format ``safetensors``: ``NAME.safetensors`` (weights) + ``NAME.json`` (the medcl document).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcl.models.saved import (
    METADATA_KEY,
    load_safetensors,
    state_dict_copy,
)

SUFFIX = ".safetensors"


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor | None = None) -> list[Path]:
    from safetensors.torch import save_file

    save_file(state_dict_copy(module), str(out), metadata={METADATA_KEY: json.dumps(doc)})
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(doc, indent=2) + "\n")
    return [out, sidecar]


def load(path: Path) -> nn.Module:
    """A ``.safetensors`` file with its ``.json`` sidecar (or the document in its header)."""
    return load_safetensors(path)
