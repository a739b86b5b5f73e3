"""The table of image formats: one :class:`ImageFormat` record per format (suffixes, sniff, check, reader).

:func:`image_format` (which format a path holds), :func:`medcl.data.readers.check_image` (the
pre-flight check) and :func:`medcl.data.readers.load_image_transform` (one MONAI reader per
format) all read this table, in its order; :func:`registered` adds a format for a ``with`` block.
Add a format: its check (:mod:`medcl.data.image_checks`), its MONAI reader class
(:mod:`medcl.data._monai_readers`) and one record in :data:`_BUILT_IN`.

Imports nothing heavy: a record names its reader class as ``"module:Class"``, imported when a
loader is built (MONAI is heavy, and the reader classes ask :func:`image_format` which files they read).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcl.data import image_checks
from medcl.tables import temporarily

#: ``check(path, kind, channels) -> problem or None`` (``kind``: ``"2d"`` / ``"3d"``)
Check = Callable[[Path, str, "int | None"], "str | None"]


@dataclass(frozen=True)
class ImageFormat:
    """One image format.

    Attributes:
        name: what :func:`image_format` returns (``"nifti"``).
        suffixes: file name endings, lower case (``".nii.gz"`` counts as one).
        check: the pre-flight check of one image (see :data:`Check`).
        reader: ``"module:Class"`` of its MONAI reader, built as ``Class(claims=name)`` (the reader
            reads the files :func:`image_format` names it for), plus ``channels=`` when
            ``reader_channels`` is set (pictures converted to 1 or 3 channels).
        sniff: recognises the format by content, for a path whose name no format claims.
        folder: a folder can hold one image of this format (a DICOM series); ``title`` names it in messages.
    """

    name: str
    suffixes: tuple[str, ...]
    check: Check
    reader: str
    reader_channels: bool = False
    sniff: Callable[[Path], bool] | None = None
    folder: bool = False
    title: str = ""

    def make_reader(self, channels: int = 1) -> Any:
        """An instance of the format's MONAI reader (imports MONAI)."""
        module, _, name = self.reader.rpartition(":")
        cls = getattr(importlib.import_module(module), name)
        kwargs = {"channels": channels} if self.reader_channels else {}
        return cls(claims=self.name, **kwargs)


def _is_dicom(path: Path) -> bool:
    """A folder (a DICOM series) or a file with the ``DICM`` magic at byte 128."""
    if path.is_dir():
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


_READERS = "medcl.data._monai_readers"
# The order is the order MONAI's LoadImage tries the readers in: given readers, it tries one after
# the other until one reads the file, without asking verify_suffix; DICOM (pydicom) goes first.
_BUILT_IN = (
    ImageFormat("dicom", (".dcm",), image_checks.check_dicom, f"{_READERS}:DicomReader", sniff=_is_dicom,
                folder=True, title="DICOM"),
    ImageFormat("nifti", (".nii", ".nii.gz"), image_checks.check_nifti, f"{_READERS}:NiftiReader"),
    ImageFormat("pil", (".png", ".jpg", ".jpeg", ".bmp"), image_checks.check_pil, f"{_READERS}:PlanarReader",
                reader_channels=True),
    ImageFormat("itk", (".nrrd", ".nhdr", ".mha", ".mhd"), image_checks.check_itk, f"{_READERS}:SimpleItkReader"),
)
_TABLE: dict[str, ImageFormat] = {fmt.name: fmt for fmt in _BUILT_IN}


def image_formats() -> tuple[ImageFormat, ...]:
    """Every format's record, in table order (the order MONAI tries their readers in)."""
    return tuple(_TABLE.values())


def get_image_format(name: str) -> ImageFormat:
    """The record of format ``name`` (KeyError when there is none)."""
    return _TABLE[name]


def image_format(path: Path) -> str | None:
    """The name of the format an image path holds: by file name first, then by content; None when unsupported."""
    name = path.name.lower()
    for fmt in _TABLE.values():
        if name.endswith(fmt.suffixes):
            return fmt.name
    for fmt in _TABLE.values():
        if fmt.sniff is not None and fmt.sniff(path):
            return fmt.name
    return None


def supported() -> list[str]:
    """What the formats accept, for messages: file formats' suffixes, folder formats' suffixes, their folders."""
    ordered = sorted(_TABLE.values(), key=lambda fmt: fmt.folder)  # stable: table order within each group
    return [s for fmt in ordered for s in fmt.suffixes] + [f"a {fmt.title} folder" for fmt in ordered if fmt.folder]


@contextlib.contextmanager
def registered(fmt: ImageFormat) -> Iterator[ImageFormat]:
    """Add ``fmt`` to the table (or replace the format of that name) for the ``with`` block only."""
    with temporarily(_TABLE, fmt.name, fmt):
        yield fmt
