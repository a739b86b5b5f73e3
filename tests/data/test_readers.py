"""Image readers: format routing, channel handling, and check_image's verdicts."""

from __future__ import annotations

import nibabel.testing
import numpy as np
import pytest
from cohort_factory import copy_into, pydicom_file, pydicom_series_folder, write_nifti
from PIL import Image

from medcl.data.readers import check_image, image_format, load_image, load_image_transform


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luminance 0.299 * 255
    Image.fromarray(rgb).save(d / "rgb.png")
    Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).save(d / "grey16.png")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6, 7), np.float32)), str(d / "vol.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 7), np.float32)), str(d / "plane.nrrd"))
    copy_into(pydicom_file("CT_small.dcm"), d / "ct.dcm")
    copy_into(pydicom_file("MR_small.dcm"), d / "noext")  # DICOM without extension: DICM magic
    copy_into(pydicom_series_folder(), d / "series")
    copy_into(nibabel.testing.data_path / "anatomical.nii", d / "anat.nii")
    copy_into(nibabel.testing.data_path / "example4d.nii.gz", d / "four_d.nii.gz")
    return d


def test_image_format(images):
    expected = {
        "anat.nii": "nifti",
        "four_d.nii.gz": "nifti",
        "rgb.png": "pil",
        "vol.mha": "itk",
        "ct.dcm": "dicom",
        "noext": "dicom",
        "series": "dicom",
    }
    assert {name: image_format(images / name) for name in expected} == expected


def test_one_transform_loads_every_format(images):
    load = load_image_transform(["a"])
    shapes = {
        n: tuple(load({"a": str(images / n)})["a"].shape)
        for n in ["anat.nii", "series", "ct.dcm", "noext", "vol.mha", "rgb.png", "grey16.png"]
    }
    assert shapes == {
        "anat.nii": (1, 33, 41, 25),
        "series": (1, 16, 16, 5),
        "ct.dcm": (1, 128, 128),
        "noext": (1, 64, 64),
        "vol.mha": (1, 7, 6, 5),
        "rgb.png": (1, 30, 20),
        "grey16.png": (1, 30, 20),
    }


def test_png_channel_handling(images):
    grey = load_image(images / "rgb.png")
    assert float(grey.max()) == pytest.approx(76, abs=1)  # luminance of pure red
    rgb = load_image(images / "rgb.png", channels=3)
    assert rgb.shape == (3, 30, 20) and float(rgb[0].max()) == 255 and float(rgb[1].max()) == 0
    deep = load_image(images / "grey16.png")
    assert float(deep.max()) == 599 * 100  # 16-bit grey keeps its depth


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("anat.nii", "3d", None),
        ("series", "3d", None),
        ("ct.dcm", "2d", None),
        ("noext", "2d", None),
        ("vol.mha", "3d", None),
        ("plane.nrrd", "2d", None),
        ("rgb.png", "2d", None),
        ("anat.nii", "2d", "3D image, but the manifest declares kind 2d"),
        ("four_d.nii.gz", "3d", "4D image"),
        ("series", "2d", "5 slices is 3D"),
        ("ct.dcm", "3d", "2D image, but the manifest declares kind 3d"),
        ("vol.mha", "2d", "3D image"),
        ("rgb.png", "3d", "is 2D"),
        ("absent.nii.gz", "3d", "does not exist"),
    ],
)
def test_check_image(images, name, kind, expected):
    problem = check_image(images / name, kind)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


def test_check_image_damaged_files(tmp_path):
    nii = write_nifti(tmp_path / "a.nii", shape=(10, 10, 10))
    nii.write_bytes(nii.read_bytes()[:1000])
    assert "truncated NIfTI" in check_image(nii, "3d")
    gz = write_nifti(tmp_path / "b.nii.gz", shape=(30, 30, 30))
    gz.write_bytes(gz.read_bytes()[:-500])
    assert "truncated" in check_image(gz, "3d")
    dcm = copy_into(pydicom_file("MR_small.dcm"), tmp_path / "c.dcm")
    dcm.write_bytes(dcm.read_bytes()[:-3000])
    assert "truncated DICOM pixel data" in check_image(dcm, "2d")
    png = tmp_path / "d.png"
    Image.fromarray(np.zeros((64, 64), np.uint8) + 7).save(png)
    png.write_bytes(png.read_bytes()[:60])
    assert "truncated" in check_image(png, "2d")
    (tmp_path / "empty").mkdir()
    assert "empty DICOM folder" in check_image(tmp_path / "empty", "3d")
    (tmp_path / "zero.nii").write_bytes(b"")
    assert "empty file" in check_image(tmp_path / "zero.nii", "3d")
    (tmp_path / "x.txt").write_text("hello")
    assert "unsupported image format" in check_image(tmp_path / "x.txt", "3d")
