"""What an export format is: :class:`ExportFormat`, one record per format, kept in :mod:`medcl.export.registry`.

Each format module (``bundle.py``, ``safetensors_file.py``, ...) defines its record as ``FORMAT``
next to its ``write`` / ``load`` / ``sniff``; the CLI's choices, :func:`medcl.export.load_encoder`'s
dispatch and the round-trip check of :func:`medcl.export.export_module` all read the records, so
no other module names a format or a suffix. Imports nothing heavy: ``medcl --help`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``write(module, document, out, probe_input) -> written paths`` (the artifact and its sidecars)
Writer = Callable[["nn.Module", dict[str, Any], Path, "torch.Tensor"], list[Path]]
#: ``load(path) -> encoder`` with ``.input_spec`` and ``.out_features``; raises MedclInputError
Loader = Callable[[Path], "nn.Module"]
#: ``sniff(path) -> bool``: does this file (or folder) hold the format, judged by its content
Sniffer = Callable[[Path], bool]


@dataclass(frozen=True)
class Sidecar:
    """A file written beside the artifact: same stem, its own ``suffix``; ``what`` it holds (for messages)."""

    suffix: str
    what: str


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, where it lives on disk, and how to write, recognise and load it.

    Attributes:
        name: the ``--format`` value, as the user types it.
        summary: said after the name in ``medcl export --help`` (``"name (summary)"``; empty: name alone).
        expected: how the loader's "unknown format" message names the artifact (its suffix, or "a NAME folder").
        write: writes the artifact (see :data:`Writer`); run inside the round-trip check.
        load: loads it back (see :data:`Loader`).
        suffixes: file extensions, lower case; the first is written, all are loaded as this format.
            Empty for a folder format.
        folder: the artifact is a folder (written as ``STEM_NAME`` by default) rather than a file.
        sidecars: files written beside a file artifact (``NAME.json`` next to ``NAME.safetensors``).
        sniff: recognises the format by content, for a folder or a file whose extension no format claims.
        title, marker: a folder format's name in prose and the file inside that marks it (for messages).
    """

    name: str
    summary: str
    expected: str
    write: Writer
    load: Loader
    suffixes: tuple[str, ...] = ()
    folder: bool = False
    sidecars: tuple[Sidecar, ...] = ()
    sniff: Sniffer | None = None
    title: str = ""
    marker: str = ""

    def __post_init__(self) -> None:
        if self.folder == bool(self.suffixes):
            raise ValueError(f"export format {self.name!r}: give suffixes for a file format, none for a folder")
        if any(s != s.lower() or not s.startswith(".") for s in self.suffixes):
            raise ValueError(f"export format {self.name!r}: suffixes must be lower case and start with '.'")

    @property
    def suffix(self) -> str:
        """The extension written (``""`` for a folder)."""
        return self.suffixes[0] if self.suffixes else ""

    def targets(self, out: Path) -> list[Path]:
        """The paths an export to ``out`` writes: the artifact, then its sidecars."""
        return [out, *(out.with_suffix(s.suffix) for s in self.sidecars)]

    def default_name(self, stem: str) -> str:
        """The artifact's name when the user gives none: ``STEM.ext``, or ``STEM_NAME`` for a folder."""
        return f"{stem}_{self.name}" if self.folder else f"{stem}{self.suffix}"
