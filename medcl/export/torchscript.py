"""Format ``torchscript``: a traced TorchScript module (``.pt``). Loading runs the file's code: trusted sources only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcl.errors import MedclInputError
from medcl.export.format import ExportFormat
from medcl.export.torch_export import is_zip, zip_names

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextlib.contextmanager
def _no_deprecation_notes() -> Iterator[None]:
    """TorchScript still works in this torch but warns on every call; the module docs say so once."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def sniff(path: Path) -> bool:
    """A zip archive holding TorchScript code."""
    return is_zip(path) and any("/code/" in n for n in zip_names(path))


def load(path: Path) -> nn.Module:
    import torch

    from medcl.export.frozen import ExportedEncoder
    from medcl.models.saved import METADATA_KEY, parse_document

    names = zip_names(path)
    if not any("/code/" in n or n.startswith("code/") for n in names):
        raise MedclInputError(f"{path}: not a TorchScript archive")
    extra = {METADATA_KEY: ""}
    try:
        with _no_deprecation_notes():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # RuntimeError with a C++ trace for a corrupted archive
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedclInputError(f"{path}: cannot load the TorchScript module ({first})") from None
    doc = parse_document(extra.get(METADATA_KEY), path)
    return ExportedEncoder(module.eval(), doc, FORMAT.name)


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    import torch

    from medcl.models.saved import METADATA_KEY

    with _no_deprecation_notes():
        traced = torch.jit.trace(module, (x,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={METADATA_KEY: json.dumps(doc)})
    return [out]


FORMAT = ExportFormat(
    name="torchscript", summary=".pt; code: load only from trusted sources", expected=".pt (TorchScript)",
    write=write, load=load, suffixes=(".pt", ".ts", ".pth", ".jit", ".torchscript"), sniff=sniff,
)
