"""Format ``safetensors``: ``NAME.safetensors`` (weights) + ``NAME.json`` (the medcl document).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcl.export.format import ExportFormat, Sidecar

if TYPE_CHECKING:
    import torch
    from torch import nn

#: the header's first 8 bytes give its length (little endian), then the JSON header starts
_MAX_HEADER = 100_000_000


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor | None = None) -> list[Path]:
    from safetensors.torch import save_file

    from medcl.models.saved import METADATA_KEY, state_dict_copy

    save_file(state_dict_copy(module), str(out), metadata={METADATA_KEY: json.dumps(doc)})
    _, sidecar = FORMAT.targets(out)
    sidecar.write_text(json.dumps(doc, indent=2) + "\n")
    return [out, sidecar]


def load(path: Path) -> nn.Module:
    """A ``.safetensors`` file with its ``.json`` sidecar (or the document in its header)."""
    from medcl.models.saved import load_safetensors

    return load_safetensors(path)


def sniff(path: Path) -> bool:
    """A file that starts like a safetensors header (its length, then ``{``)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) >= 8 and int.from_bytes(head[:8], "little") < _MAX_HEADER and head[8:9] == b"{"


FORMAT = ExportFormat(
    name="safetensors", summary="+ .json spec", expected=".safetensors (+ .json)", write=write, load=load,
    suffixes=(".safetensors",), sidecars=(Sidecar(".json", "architecture + input spec"),), sniff=sniff,
)
