"""Preprocessing chain, its cache fingerprint, augmentation presets and per-view seeding."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medcl.data.manifest import load_manifest, parse_manifest
from medcl.data.transforms import (
    PRESETS,
    augmentation_transforms,
    preprocessing_fingerprint,
    preprocessing_transforms,
    view_seed,
)
from medcl.errors import MedclInputError


def _first_image(manifest_path) -> str:
    table = pd.read_csv(manifest_path.parent / "participants.csv")
    return str(manifest_path.parent / table["image"][0])


def _variant(manifest_path, **preprocessing):
    """The manifest with some preprocessing settings replaced."""
    data = load_manifest(manifest_path).model_dump(mode="json", exclude_none=True)
    data["preprocessing"].update(preprocessing)
    return parse_manifest(data, path=manifest_path)


FIXTURES = ["synthetic_3d_manifest", "synthetic_2d_manifest", "synthetic_dicom_manifest"]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_preprocessing_gives_a_standardised_float_tensor(request, fixture):
    path = request.getfixturevalue(fixture)
    manifest = load_manifest(path)
    out = preprocessing_transforms(manifest)({"image": _first_image(path)})["image"]
    assert type(out) is torch.Tensor  # plain tensor: cheap to cache and collate
    assert out.dtype == torch.float32
    assert tuple(out.shape) == (1, *manifest.preprocessing.size)
    assert abs(out.mean().item()) < 1e-3 and out.std().item() == pytest.approx(1, abs=0.02)


def test_intensity_methods(synthetic_3d_manifest):
    image = {"image": _first_image(synthetic_3d_manifest)}

    def run(**intensity):
        chain = preprocessing_transforms(_variant(synthetic_3d_manifest, intensity=intensity))
        return chain(dict(image))["image"]

    minmax = run(method="minmax")
    assert minmax.min().item() == pytest.approx(0) and minmax.max().item() == pytest.approx(1)
    pct = run(method="percentile", lower=5, upper=95)
    assert pct.min().item() == 0 and pct.max().item() == 1
    assert (pct == 1).float().mean().item() > 0.04  # the top 5 % are clipped
    raw = run(method="none")
    stored = nib.load(image["image"]).get_fdata()
    assert raw.max().item() == pytest.approx(stored.max())


def test_resize_pads_or_crops_to_size(synthetic_3d_manifest):
    manifest = _variant(synthetic_3d_manifest, size=[20, 12, 16], intensity={"method": "none"})
    out = preprocessing_transforms(manifest)({"image": _first_image(synthetic_3d_manifest)})["image"]
    assert tuple(out.shape) == (1, 20, 12, 16)
    stored = nib.load(_first_image(synthetic_3d_manifest)).get_fdata()
    assert torch.all(out[0, :2] == 0) and torch.all(out[0, -2:] == 0)  # padded along x
    np.testing.assert_allclose(out[0, 2:18, :, :].numpy(), stored[:, 2:14, :], rtol=1e-6)  # cropped y


def test_orientation_brings_a_flipped_file_back_to_ras(synthetic_3d_manifest, tmp_path):
    src = nib.load(_first_image(synthetic_3d_manifest))
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = src.shape[0] - 1
    las = nib.Nifti1Image(src.get_fdata()[::-1].astype(np.int16), src.affine @ flip)
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    nib.save(las, tmp_path / "las.nii.gz")
    chain = preprocessing_transforms(load_manifest(synthetic_3d_manifest))
    a = chain({"image": _first_image(synthetic_3d_manifest)})["image"]
    b = chain({"image": str(tmp_path / "las.nii.gz")})["image"]
    torch.testing.assert_close(a, b)


def test_spacing_resamples_before_resizing(synthetic_3d_manifest):
    manifest = _variant(synthetic_3d_manifest, spacing=[24.0, 24.0, 24.0])  # files have 12 mm voxels
    out = preprocessing_transforms(manifest)({"image": _first_image(synthetic_3d_manifest)})["image"]
    assert tuple(out.shape) == (1, 16, 16, 16)
    inner = out[0, 4:12, 4:12, 4:12]
    assert torch.all(out[0, :3] == 0) and inner.std() > 0.5  # 8^3 of content, padded back to 16^3


def test_fingerprint_covers_preprocessing_only(synthetic_3d_manifest):
    base = load_manifest(synthetic_3d_manifest)
    fp = preprocessing_fingerprint(base)
    assert fp == preprocessing_fingerprint(load_manifest(synthetic_3d_manifest))
    changed = [
        _variant(synthetic_3d_manifest, size=[12, 12, 12]),
        _variant(synthetic_3d_manifest, spacing=[10.0, 10.0, 10.0]),
        _variant(synthetic_3d_manifest, intensity={"method": "minmax"}),
        _variant(synthetic_3d_manifest, orientation="LPS"),
    ]
    assert len({fp, *(preprocessing_fingerprint(m) for m in changed)}) == 5
    other_attrs = base.model_copy(update={"attributes": base.attributes[:1]})
    assert preprocessing_fingerprint(other_attrs) == fp


@pytest.mark.parametrize("preset,dims", [("mri3d", 3), ("ct3d", 3), ("xray2d", 2), ("none", 2), ("none", 3)])
def test_presets_keep_shape_and_are_reproducible_per_seed(preset, dims):
    size = [16] * dims
    image = torch.randn(1, *size)
    chain = augmentation_transforms(preset, dims, size=size)
    outs = []
    for seed in (1, 1, 2):
        chain.set_random_state(seed=seed)
        outs.append(chain(image))
    assert all(type(o) is torch.Tensor and o.dtype == torch.float32 and o.shape == image.shape for o in outs)
    torch.testing.assert_close(outs[0], outs[1])
    if preset == "none":
        torch.testing.assert_close(outs[0], image)
    else:
        assert not torch.equal(outs[0], outs[2])


def test_preset_without_size_keeps_the_input_size():
    chain = augmentation_transforms("xray2d", 2)
    chain.set_random_state(seed=0)
    assert chain(torch.randn(1, 24, 20)).shape == (1, 24, 20)


def test_strength_scales_the_change():
    image = torch.randn(1, 16, 16, 16)
    diffs = []
    for strength in (0.0, 1.0):
        chain = augmentation_transforms("mri3d", 3, size=[16] * 3, strength=strength)
        total = 0.0
        for seed in range(4):
            chain.set_random_state(seed=seed)
            total += (chain(image) - image).abs().mean().item()
        diffs.append(total)
    assert diffs[0] < 0.2 * diffs[1]


@pytest.mark.parametrize(
    "preset,dims,culprit", [("mri2d", 2, "unknown"), ("mri3d", 2, "mri3d"), ("xray2d", 3, "xray2d")]
)
def test_bad_preset_names_the_culprit(preset, dims, culprit):
    with pytest.raises(MedclInputError, match=culprit):
        augmentation_transforms(preset, dims)


def test_view_seed_depends_on_every_argument():
    base = view_seed(0, 0, 0, 0)
    assert base == view_seed(0, 0, 0, 0)
    others = {view_seed(1, 0, 0, 0), view_seed(0, 1, 0, 0), view_seed(0, 0, 1, 0), view_seed(0, 0, 0, 1)}
    assert base not in others and len(others) == 4
    assert all(0 <= s < 2**32 for s in others)


def test_presets_table_lists_dims():
    assert PRESETS == {"mri3d": 3, "ct3d": 3, "xray2d": 2, "none": None}
