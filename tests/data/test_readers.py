"""Image readers: format routing, channel handling, and check_image's verdicts."""

from __future__ import annotations

import nibabel.testing
import numpy as np
import pytest
from cohort_factory import copy_into, pydicom_file, pydicom_series_folder, write_nifti
from isolation import without_package
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


def _oblique_images(folder):
    """A 3D .mha (oblique direction, anisotropic spacing, offset origin), a 2D .nrrd and a 2D
    3-component .nrrd, with distinct values per voxel."""
    import SimpleITK as sitk

    vol = sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7))
    c, s = np.cos(0.3), np.sin(0.3)
    vol.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    vol.SetSpacing((0.7, 1.1, 2.5))
    vol.SetOrigin((10.0, -4.0, 3.0))
    plane = sitk.GetImageFromArray(np.arange(6 * 7, dtype=np.int16).reshape(6, 7))
    plane.SetSpacing((0.5, 0.25))
    rgb = sitk.GetImageFromArray(np.arange(6 * 7 * 3, dtype=np.uint8).reshape(6, 7, 3), isVector=True)
    paths = {"vol.mha": vol, "plane.nrrd": plane, "rgb.nrrd": rgb}
    for name, image in paths.items():
        sitk.WriteImage(image, str(folder / name))
    return [folder / name for name in paths]


def test_nrrd_and_mha_read_like_monai_itk_reader(tmp_path):
    pytest.importorskip("itk")
    from monai.data import ITKReader

    from medcl.data._monai_readers import SimpleItkReader

    vol, plane, rgb = _oblique_images(tmp_path)
    ours = SimpleItkReader()
    array, meta = ours.get_data(ours.read(rgb))  # vector pixels: components last, x before y
    assert array.shape == (7, 6, 3) and array[2, 1].tolist() == [3 * (7 + 2), 3 * (7 + 2) + 1, 3 * (7 + 2) + 2]
    assert meta["original_channel_dim"] == -1
    for path in (vol, plane):  # (ITK's Python wrapping has no reader for 2D uint8 vectors)
        ours, theirs = SimpleItkReader(), ITKReader()
        array, meta = ours.get_data(ours.read(path))
        expected, expected_meta = theirs.get_data(theirs.read(str(path)))
        np.testing.assert_array_equal(array, expected)
        assert array.dtype == expected.dtype
        for key in ("affine", "original_affine", "spacing", "spatial_shape"):
            np.testing.assert_allclose(meta[key], expected_meta[key], atol=1e-12, err_msg=f"{path.name}: {key}")
        assert str(meta["space"]) == str(expected_meta["space"])
        assert np.isnan(meta["original_channel_dim"]) == np.isnan(float(expected_meta["original_channel_dim"]))


_WITHOUT_ITK = without_package("itk") + """
from medcl.data.readers import check_image, load_image

folder = sys.argv[1]
vol, plane, rgb = (load_image(f"{folder}/{name}") for name in ("vol.mha", "plane.nrrd", "rgb.nrrd"))
assert vol.shape == (1, 7, 6, 5) and plane.shape == (1, 7, 6), (vol.shape, plane.shape)
assert float(vol[0, 2, 1, 3]) == 3 * 42 + 1 * 7 + 2  # array index [z, y, x] = [3, 1, 2]
assert check_image(f"{folder}/vol.mha", "3d") is None and "3D image" in check_image(f"{folder}/vol.mha", "2d")
assert "itk" not in sys.modules, "itk was imported"
print("read without itk", tuple(rgb.shape))
"""


def test_nrrd_and_mha_are_read_without_the_itk_package(tmp_path):
    import subprocess
    import sys

    _oblique_images(tmp_path)
    out = subprocess.run([sys.executable, "-c", _WITHOUT_ITK, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "read without itk (1, 7, 6)" not in out.stdout  # rgb: 3 channels first
    assert "read without itk (3, 7, 6)" in out.stdout
