"""Which image format a path holds, from its name (or a DICOM file's magic bytes).

The table of formats and readers is in :mod:`medcl.data.readers`; this module is separate so that
the MONAI reader classes (:mod:`medcl.data._monai_readers`) and :mod:`medcl.data.readers` can both
use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")

ImageFormat = Literal["nifti", "dicom", "pil", "itk"]


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def image_format(path: Path) -> ImageFormat | None:
    """The format of an image path (see the module table), or None when not supported."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    if path.is_dir() or _is_dicom_file(path):
        return "dicom"
    return None
