"""Format ``torch-export``: a ``torch.export`` program (``.pt2``), batch dimension dynamic; never unpickled.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcl.errors import MedclInputError
from medcl.export.format import ExportFormat

if TYPE_CHECKING:
    import torch
    from torch import nn

_PROGRAM_MARK = "model_weights_config.json"  # a file every torch.export archive holds


def zip_names(path: Path) -> list[str]:
    """The member names of a zip archive (``.pt2`` and TorchScript files are zips); MedclInputError if not one."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise MedclInputError(f"{path}: not a valid archive ({err})") from None


def is_zip(path: Path) -> bool:
    """Whether ``path`` is a file starting with a zip signature."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def _check_pt2_has_no_pickle(path: Path, names: list[str]) -> None:
    """Refuse ``.pt2`` archives whose weights or constants would be unpickled on load."""
    with zipfile.ZipFile(path) as z:
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.endswith(".pt") and ("/data/weights/" in name or "/data/constants/" in name):
                raise MedclInputError(f"{path}: legacy pickled weights in the archive; medcl won't unpickle")
            if base.endswith("_config.json") and ("/data/weights/" in name or "/data/constants/" in name):
                config = json.loads(z.read(name)).get("config", {})
                for fqn, entry in config.items():
                    if entry.get("use_pickle") or str(entry.get("path_name", "")).startswith(
                        ("custom_obj", "opaque")
                    ):
                        raise MedclInputError(
                            f"{path}: entry {fqn!r} is a pickled object; medcl will not unpickle it"
                        )


def sniff(path: Path) -> bool:
    """A zip archive holding a ``torch.export`` program."""
    return is_zip(path) and any(n.endswith(_PROGRAM_MARK) for n in zip_names(path))


def load(path: Path) -> nn.Module:
    import torch

    from medcl.export.frozen import ExportedEncoder
    from medcl.models.saved import METADATA_KEY, parse_document

    names = zip_names(path)
    if not any(n.endswith(_PROGRAM_MARK) for n in names):
        raise MedclInputError(f"{path}: not a torch.export (.pt2) archive")
    _check_pt2_has_no_pickle(path, names)
    extra = {METADATA_KEY: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as err:  # corrupted archive content: the loader raises many kinds
        raise MedclInputError(
            f"{path}: cannot load the torch.export program ({type(err).__name__}: {err})"
        ) from None
    doc = parse_document(extra.get(METADATA_KEY), path)
    return ExportedEncoder(program.module(), doc, FORMAT.name)


def write(module: nn.Module, doc: dict[str, Any], out: Path, x: torch.Tensor) -> list[Path]:
    import torch

    from medcl.models.saved import METADATA_KEY

    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
        doc["batch_size"] = "dynamic"
    except Exception:  # a model that specialises on the batch size: export it static
        program = torch.export.export(module, (x,))
        doc["batch_size"] = int(x.shape[0])
    torch.export.save(program, str(out), extra_files={METADATA_KEY: json.dumps(doc)})
    return [out]


FORMAT = ExportFormat(
    name="torch-export", summary=".pt2", expected=".pt2", write=write, load=load, suffixes=(".pt2",), sniff=sniff,
)
