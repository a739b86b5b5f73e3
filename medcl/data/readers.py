"""Image formats: which MONAI reader loads which file, and a cheap pre-flight check.

Supported (``image_format``, defined in :mod:`medcl.data.image_formats` and re-exported here):

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

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monai.transforms import LoadImaged

from medcl.data.image_formats import ITK_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, ImageFormat, image_format

__all__ = ["ImageFormat", "check_image", "image_format", "load_image", "load_image_transform"]


def load_image_transform(keys: str | Sequence[str] = "image", *, channels: int = 1, **kwargs) -> LoadImaged:
    """A MONAI ``LoadImaged`` (channel first, ``image_only``) that reads every supported format.

    Each path is routed to the reader of its format (see the module table), so one transform
    serves a cohort that mixes formats. Output: ``(C, *spatial)``; DICOM series folders come out
    as ``(C, H, W, slices)``. ``kwargs`` go to ``LoadImaged`` (e.g. ``dtype``).
    """
    from monai.transforms import LoadImaged

    from medcl.data._monai_readers import DicomReader, NiftiReader, PlanarReader, SimpleItkReader

    readers = (SimpleItkReader(), PlanarReader(channels=channels), NiftiReader(), DicomReader())
    kwargs.setdefault("image_only", True)
    return LoadImaged(keys=keys, reader=readers, ensure_channel_first=True, **kwargs)


def load_image(path: str | Path, *, channels: int = 1):
    """Load one image as a channel-first MONAI ``MetaTensor`` (for scripts and checks)."""
    return load_image_transform("image", channels=channels)({"image": str(path)})["image"]


def _spatial_problem(shape: tuple[int, ...], kind: str, channels: int | None) -> str | None:
    """Compare a stored array shape with the declared kind. Trailing singleton axes are ignored;
    a trailing axis equal to ``channels`` (> 1) counts as channels."""
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if channels and channels > 1 and len(dims) > 2 and dims[-1] == channels:
        dims.pop()
    want = 2 if kind == "2d" else 3
    if len(dims) == want:
        return None
    return f"has shape {tuple(shape)}: a {len(dims)}D image, but the manifest declares kind {kind}"


def _check_nifti(path: Path, kind: str, channels: int | None) -> str | None:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        header = img.header
        nbytes = int(header.get_data_dtype().itemsize)
        for s in shape:
            nbytes *= s
        offset = int(header.get("vox_offset", 0)) if hasattr(header, "get") else 0
    except Exception as err:
        return f"corrupt or not a NIfTI file ({type(err).__name__}: {err})"
    try:
        if path.name.lower().endswith(".gz"):
            size = 0
            with gzip.open(path, "rb") as fh:  # stream: checks the CRC without holding the image
                while chunk := fh.read(1 << 20):
                    size += len(chunk)
        else:
            size = path.stat().st_size
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        return f"corrupt or truncated compressed NIfTI ({type(err).__name__}: {err})"
    if size < offset + nbytes:
        return f"truncated NIfTI: {size} bytes, the header needs {offset + nbytes}"
    return _spatial_problem(shape, kind, channels)


def _dicom_pixel_problem(ds) -> str | None:
    """Check that uncompressed pixel data is as long as the header says."""
    if "PixelData" not in ds:
        return "DICOM file has no pixel data (truncated?)"
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        return None
    try:
        need = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
        need *= int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError) as err:
        return f"DICOM header lacks image geometry ({err})"
    have = len(ds.PixelData)
    if have < need:
        return f"truncated DICOM pixel data: {have} bytes, the header needs {need}"
    return None


def _check_dicom_file(path: Path, kind: str, channels: int | None) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as err:
        return f"corrupt or not a DICOM file ({type(err).__name__}: {err})"
    problem = _dicom_pixel_problem(ds)
    if problem:
        return problem
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shape = (int(ds.Rows), int(ds.Columns)) + ((frames,) if frames > 1 else ())
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples > 1:
        shape = (*shape, samples)
    if samples > 1 and channels in (None, 1):
        return f"is a {samples}-sample (colour) DICOM but the manifest declares {channels or 1} channel(s)"
    return _spatial_problem(shape, kind, channels if samples > 1 else None)


def _check_dicom_folder(path: Path, kind: str) -> str | None:
    import pydicom

    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        return "empty DICOM folder (no files)"
    series: set[str] = set()
    slices = 0
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=False)
        except Exception:
            continue
        if f.name.upper() == "DICOMDIR" or "PixelData" not in ds:
            continue
        problem = _dicom_pixel_problem(ds)
        if problem:
            return f"{f.name}: {problem}"
        series.add(str(ds.get("SeriesInstanceUID", "")))
        slices += int(ds.get("NumberOfFrames", 1) or 1)
    if slices == 0:
        return f"no DICOM image in the folder ({len(files)} file(s), none readable as a DICOM image)"
    if len(series) > 1:
        return f"the folder mixes {len(series)} DICOM series; give each series its own folder"
    if kind == "2d" and slices > 1:
        return f"a DICOM series of {slices} slices is 3D, but the manifest declares kind 2d"
    if kind == "3d" and slices == 1:
        return "a DICOM folder with a single 2D slice, but the manifest declares kind 3d"
    return None


def _check_pil(path: Path, kind: str) -> str | None:
    from PIL import Image

    if kind != "2d":
        return f"a {path.suffix} picture is 2D, but the manifest declares kind {kind}"
    try:
        with Image.open(path) as im:
            im.load()  # decodes: catches truncated files, which verify() does not always
    except Exception as err:
        return f"corrupt or truncated image ({type(err).__name__}: {err})"
    return None


def _check_itk(path: Path, kind: str, channels: int | None) -> str | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = tuple(reversed(reader.GetSize()))
        ncomp = reader.GetNumberOfComponents()
        reader.Execute()  # also catches truncated raw data
    except Exception as err:
        return f"cannot read it ({type(err).__name__}: {str(err).strip().splitlines()[-1][:200]})"
    shape = tuple(reversed(size)) + ((ncomp,) if ncomp > 1 else ())
    return _spatial_problem(shape, kind, channels if ncomp > 1 else None)


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
    fmt = image_format(path)
    if path.is_dir():
        return _check_dicom_folder(path, kind)
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    if fmt is None:
        known = [*NIFTI_SUFFIXES, *PIL_SUFFIXES, *ITK_SUFFIXES, ".dcm", "a DICOM folder"]
        return f"unsupported image format {path.suffix or '(no extension)'!r}; supported: {known}"
    if fmt == "nifti":
        return _check_nifti(path, kind, channels)
    if fmt == "dicom":
        return _check_dicom_file(path, kind, channels)
    if fmt == "pil":
        return _check_pil(path, kind)
    return _check_itk(path, kind, channels)
