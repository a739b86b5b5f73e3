"""MONAI image readers that claim only the files they are meant for.

MONAI picks a reader by asking each registered one ``verify_suffix(path)``; the stock
``PydicomReader`` and ``ITKReader`` say yes to everything, which makes the choice depend on
registration order. These subclasses answer by format, so a mixed cohort (NIfTI, DICOM folders,
PNG, NRRD) loads each file with the reader below. Imports MONAI: import this module lazily.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

from monai.data import ITKReader, NibabelReader, PILReader, PydicomReader
from monai.utils import ensure_tuple

from medcl.data.image_formats import image_format

# MONAI's LoadImage instantiates every known reader, including the GPU-only nvImageCodec DICOM one,
# which then warns on every load on a machine without it. Its fallback is the plain pydicom decoder
# that medcl uses anyway, so the message carries no information here.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin")


def _all_of(filename: Sequence | object, fmt: str) -> bool:
    return all(image_format(Path(str(f))) == fmt for f in ensure_tuple(filename))


class DicomReader(PydicomReader):
    """``PydicomReader`` for DICOM series folders and single DICOM files (``.dcm`` or ``DICM`` magic)."""

    def verify_suffix(self, filename) -> bool:  # type: ignore[override]
        return _all_of(filename, "dicom")


class NiftiReader(NibabelReader):
    """``NibabelReader`` restricted to ``.nii`` / ``.nii.gz``."""

    def verify_suffix(self, filename) -> bool:  # type: ignore[override]
        return _all_of(filename, "nifti")


class ItkReader(ITKReader):
    """``ITKReader`` restricted to ``.nrrd`` / ``.nhdr`` / ``.mha`` / ``.mhd``."""

    def verify_suffix(self, filename) -> bool:  # type: ignore[override]
        return _all_of(filename, "itk")


class PlanarReader(PILReader):
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

    def verify_suffix(self, filename) -> bool:  # type: ignore[override]
        return _all_of(filename, "pil")
