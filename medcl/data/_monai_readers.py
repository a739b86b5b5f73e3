"""MONAI image readers that claim only the files they are meant for.

MONAI picks a reader by asking each registered one ``verify_suffix(path)``; the stock
``PydicomReader`` and ``ITKReader`` say yes to everything, which makes the choice depend on
registration order. These readers answer by format, so a mixed cohort (NIfTI, DICOM folders,
PNG, NRRD) loads each file with the reader below. NRRD and MetaImage go through SimpleITK
(:class:`SimpleItkReader`), so medcl does not need the ``itk`` package. Imports MONAI: import this
module lazily.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader, NibabelReader, PILReader, PydicomReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medcl.data.image_formats import image_format

# MONAI's LoadImage instantiates every known reader, including the GPU-only nvImageCodec DICOM one,
# which then warns on every load on a machine without it. Its fallback is the plain pydicom decoder
# that medcl uses anyway, so the message carries no information here.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin")


class _ClaimsItsFormat:
    """``verify_suffix`` answers by format: yes to the files :func:`image_format` gives the reader's
    format (``claims``, set by :meth:`medcl.data.image_formats.ImageFormat.make_reader`), no otherwise."""

    def __init__(self, *args, claims: str | None = None, **kwargs) -> None:
        self.claims = claims
        super().__init__(*args, **kwargs)

    def verify_suffix(self, filename: Sequence | object) -> bool:
        return self.claims is not None and all(
            image_format(Path(str(f))) == self.claims for f in ensure_tuple(filename)
        )


class DicomReader(_ClaimsItsFormat, PydicomReader):
    """``PydicomReader`` for DICOM series folders and single DICOM files (``.dcm`` or ``DICM`` magic)."""


class NiftiReader(_ClaimsItsFormat, NibabelReader):
    """``NibabelReader`` restricted to ``.nii`` / ``.nii.gz``."""


class SimpleItkReader(_ClaimsItsFormat, ImageReader):
    """NRRD / MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) read with SimpleITK, as MONAI's
    ``ITKReader`` reads them with its defaults.

    Why not ``ITKReader``: it needs the ``itk`` package (1.5 GB installed); SimpleITK (a medcl
    dependency, 264 MB) reads the same files. Same output: the array in ITK's index order
    (x, y[, z]) with vector components last, the affine from direction, spacing and origin turned
    from ITK's LPS into RAS, ``spacing``, ``spatial_shape``, ``original_channel_dim`` and the file's
    own metadata keys (tested against ``ITKReader`` in ``tests/data/test_readers.py``).
    """

    def read(self, data, **kwargs):
        import SimpleITK as sitk

        images = [sitk.ReadImage(str(name)) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        arrays: list[np.ndarray] = []
        meta: dict = {}
        for image in img if isinstance(img, list | tuple) else [img]:  # an Image iterates over its pixels
            array = sitk.GetArrayFromImage(image)  # numpy order (z, y, x[, components])
            single = image.GetNumberOfComponentsPerPixel() == 1
            arrays.append(array.T if single else np.moveaxis(array.T, 0, -1))
            header = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if not key.startswith("ITK_")}
            dims = image.GetDimension()
            sr = min(max(dims, 1), 3)
            spacing, origin = np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin())
            direction = np.asarray(image.GetDirection()).reshape(dims, dims)
            affine = np.eye(sr + 1)
            affine[:sr, :sr] = direction[:sr, :sr] @ np.diag(spacing[:sr])
            affine[:sr, -1] = origin[:sr]
            header["spacing"] = spacing
            header[MetaKeys.ORIGINAL_AFFINE] = orientation_ras_lps(affine)
            header[MetaKeys.SPACE] = SpaceKeys.RAS
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.GetSize()[:sr])
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if single else -1
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta


class PlanarReader(_ClaimsItsFormat, PILReader):
    """``PILReader`` for PNG / JPEG / BMP that converts to ``channels`` channels.

    One channel: colour (RGB, RGBA, palette) images become luminance (PIL's ``L``: ITU-R 601-2);
    single-channel images keep their bit depth (16-bit PNG stays 16-bit). Three channels: converted
    to RGB (alpha dropped, grey replicated).
    """

    def __init__(self, channels: int = 1, **kwargs) -> None:
        self.channels = channels
        super().__init__(converter=self._convert, **kwargs)

    def _convert(self, image):
        single = image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
        if self.channels == 1:
            return image if single else image.convert("L")
        return image if image.mode == "RGB" else image.convert("RGB")
