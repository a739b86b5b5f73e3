"""Image formats: which MONAI reader loads which file, and a cheap pre-flight check.

Supported (the records of :mod:`medcl.data.image_formats`; ``image_format`` is re-exported here):

=========  ==========================================================  ======================
format     files                                                       MONAI reader
=========  ==========================================================  ======================
nifti      ``.nii``, ``.nii.gz``                                       ``NibabelReader``
dicom      a series folder, or a single file (``.dcm`` or ``DICM``)    ``PydicomReader``
pil        ``.png``, ``.jpg``, ``.jpeg``, ``.bmp`` (2D only)           ``PILReader``
itk        ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``                    ``SimpleItkReader``
=========  ==========================================================  ======================

``SimpleItkReader`` (:mod:`medcl.data._monai_readers`) reads with SimpleITK what MONAI's
``ITKReader`` would read with the ``itk`` package, which medcl does not need.

Channels of 2D pictures: with ``image.channels: 1`` (the default) colour PNG/JPEG images are
converted to luminance, grey images keep their bit depth; with ``channels: 3`` everything is
converted to RGB. Other formats are loaded as stored (one channel per scalar image).

This module imports no MONAI at import time; :func:`load_image_transform` does, lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monai.transforms import LoadImaged

from medcl.data.image_formats import ImageFormat, image_format, image_formats, supported

__all__ = ["ImageFormat", "check_image", "image_format", "load_image", "load_image_transform"]


def load_image_transform(keys: str | Sequence[str] = "image", *, channels: int = 1, **kwargs) -> LoadImaged:
    """A MONAI ``LoadImaged`` (channel first, ``image_only``) that reads every supported format.

    Each path is routed to the reader of its format (one reader per record of the format table),
    so one transform serves a cohort that mixes formats. Output: ``(C, *spatial)``; DICOM series folders come out
    as ``(C, H, W, slices)``. ``kwargs`` go to ``LoadImaged`` (e.g. ``dtype``).
    """
    from monai.transforms import LoadImaged

    # MONAI tries the readers from the last one: the table's first format is tried first
    readers = tuple(fmt.make_reader(channels) for fmt in reversed(image_formats()))
    kwargs.setdefault("image_only", True)
    return LoadImaged(keys=keys, reader=readers, ensure_channel_first=True, **kwargs)


def load_image(path: str | Path, *, channels: int = 1):
    """Load one image as a channel-first MONAI ``MetaTensor`` (for scripts and checks)."""
    return load_image_transform("image", channels=channels)({"image": str(path)})["image"]



def check_image(path: str | Path, kind: str, channels: int | None = None) -> str | None:
    """Open an image cheaply and return what is wrong with it, or None when it is usable.

    Checks existence, format, readability (corrupt or truncated data), an empty or mixed DICOM
    folder, and that the dimensionality matches ``kind`` (``"2d"`` or ``"3d"``). Reads headers
    where that suffices; compressed NIfTI is streamed to verify its checksum. The message does
    not repeat the path: the caller names the file.
    """
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if path.is_dir():  # a folder is read as the first folder format's (a DICOM series)
        fmt = next((f for f in image_formats() if f.folder and (f.sniff is None or f.sniff(path))), None)
    else:
        fmt = next((f for f in image_formats() if f.name == image_format(path)), None)
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    if fmt is None:
        return f"unsupported image format {path.suffix or '(no extension)'!r}; supported: {supported()}"
    return fmt.check(path, kind, channels)
