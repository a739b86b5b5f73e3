"""Pre-flight checks of one image per format: open it cheaply and say what is wrong, or None.

Each format's record in :mod:`medcl.data.image_formats` names its check; :func:`medcl.data.readers.check_image`
dispatches. A check reads headers where that suffices (compressed NIfTI is streamed to verify its
checksum) and compares the dimensionality with the manifest's ``kind``; its message does not repeat
the path: the caller names the file. Readers (nibabel, pydicom, PIL, SimpleITK) load on use.
"""

from __future__ import annotations

import gzip
from pathlib import Path


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


def check_nifti(path: Path, kind: str, channels: int | None) -> str | None:
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


def check_pil(path: Path, kind: str, channels: int | None = None) -> str | None:
    from PIL import Image

    if kind != "2d":
        return f"a {path.suffix} picture is 2D, but the manifest declares kind {kind}"
    try:
        with Image.open(path) as im:
            im.load()  # decodes: catches truncated files, which verify() does not always
    except Exception as err:
        return f"corrupt or truncated image ({type(err).__name__}: {err})"
    return None


def check_itk(path: Path, kind: str, channels: int | None) -> str | None:
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


def check_dicom(path: Path, kind: str, channels: int | None) -> str | None:
    """A DICOM series folder or a single DICOM file."""
    if path.is_dir():
        return _check_dicom_folder(path, kind)
    return _check_dicom_file(path, kind, channels)
