"""The image-format table: a format added as one record is recognised, checked and read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.data import NumpyReader

from medcl.data.image_formats import ImageFormat, image_format, image_formats, registered, supported
from medcl.data.readers import check_image, load_image


class NpyReader(NumpyReader):
    """MONAI's NumpyReader, built as the table builds readers (``claims=``)."""

    def __init__(self, claims: str | None = None, **kwargs) -> None:
        self.claims = claims
        super().__init__(**kwargs)


def _check_npy(path: Path, kind: str, channels: int | None) -> str | None:
    dims = np.load(path, mmap_mode="r").ndim
    return None if dims == int(kind[0]) else f"a {dims}D array, but the manifest declares kind {kind}"


@pytest.fixture
def npy_format():
    record = ImageFormat("npy", (".npy",), _check_npy, f"{__name__}:NpyReader")
    with registered(record) as fmt:
        yield fmt
    assert "npy" not in [f.name for f in image_formats()]


def test_a_registered_image_format_is_recognised_checked_and_read(npy_format, tmp_path):
    path = tmp_path / "slice.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert image_format(path) == "npy" and ".npy" in supported()
    assert check_image(path, "2d") is None
    assert check_image(path, "3d") == "a 2D array, but the manifest declares kind 3d"
    image = load_image(path)
    assert tuple(image.shape) == (1, 3, 4) and float(image[0, 2, 3]) == 11


def test_without_the_record_the_format_is_unsupported(tmp_path):
    path = tmp_path / "slice.npy"
    np.save(path, np.zeros((3, 4)))
    assert image_format(path) is None
    assert "unsupported image format '.npy'" in check_image(path, "2d")
