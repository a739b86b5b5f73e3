"""The batched augmentation backend: reproducible per (seed, epoch, subject, view), each step equal
to MONAI's transform for the same parameters, and the same distributions as the MONAI backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _pretrain_helpers import cli, write_config
from monai.transforms import (
    AdjustContrast,
    Affine,
    Flip,
    GaussianSmooth,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleCrop,
    RandScaleIntensity,
    RandShiftIntensity,
    Resize,
)

from medcl.data.batch_augment import (  # the steps, checked one by one
    BatchAugmentation,
    _blur,
    _gamma,
    _rotation,
    bias_field_basis,
)
from medcl.data.datasets import MultiViewDataset, collate_multiview
from medcl.data.resample import resample
from medcl.data.transforms import preset_spec, spec_transforms, view_seed
from medcl.errors import MedclInputError
from medcl.pretrain.config import parse_config
from medcl.pretrain.loop import prepare
from medcl.pretrain.module import PretrainModule
from medcl.pretrain.run_dir import RunDir


def _blob(dims: int, n: int) -> torch.Tensor:
    """A smooth test image (1, *[n]*dims): a Gaussian blob on a ramp (min < 0 < max)."""
    grid = torch.meshgrid(*[torch.linspace(-1, 1, n)] * dims, indexing="ij")
    r2 = sum(g**2 for g in grid)
    return (torch.exp(-r2 / 0.3) + 0.3 * grid[0] + 0.1).unsqueeze(0)


# ---------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("preset,dims", [("mri3d", 3), ("ct3d", 3), ("xray2d", 2)])
def test_same_seed_same_views_whatever_the_batch(preset: str, dims: int) -> None:
    images = torch.randn(3, 1, *[12] * dims)
    aug = BatchAugmentation(preset_spec(preset, dims), seed=7)
    views = aug(images, torch.tensor([5, 9, 2]), epoch=3, views=2)
    assert views.shape == (3, 2, 1, *[12] * dims) and views.dtype == torch.float32
    torch.testing.assert_close(aug(images, [5, 9, 2], 3, 2), views, rtol=0, atol=0)
    # a subject's views do not depend on its batch mates or its position in the batch
    alone = BatchAugmentation(preset_spec(preset, dims), seed=7)(images[2:], [2], 3, 2)
    torch.testing.assert_close(alone[0], views[2], rtol=0, atol=1e-6)
    swapped = aug(images.flip(0), [2, 9, 5], 3, 2)
    torch.testing.assert_close(swapped.flip(0), views, rtol=0, atol=1e-6)


def test_views_do_not_depend_on_the_cpu_thread_count_which_is_restored() -> None:
    images = torch.randn(4, 1, 10, 10, 10)
    aug = BatchAugmentation(preset_spec("mri3d", 3), seed=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = aug(images, [0, 1, 2, 3], epoch=1)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = aug(images, [0, 1, 2, 3], epoch=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, two, rtol=0, atol=1e-6)


def test_views_differ_across_views_subjects_epochs_and_seeds() -> None:
    image = _blob(3, 12)[None].expand(2, 1, 12, 12, 12)  # the same image for two subjects
    aug = BatchAugmentation(preset_spec("mri3d", 3), seed=0)
    base = aug(image, [0, 1], epoch=0, views=2)
    others = {
        "view": base[0, 1],
        "subject": base[1, 0],
        "epoch": aug(image, [0, 1], 1, 2)[0, 0],
        "seed": BatchAugmentation(preset_spec("mri3d", 3), seed=1)(image, [0, 1], 0, 2)[0, 0],
    }
    for what, other in others.items():
        assert (other - base[0, 0]).abs().mean() > 1e-3, what


def test_strength_zero_is_the_identity() -> None:
    image = torch.randn(4, 1, 10, 10, 10)
    views = BatchAugmentation(preset_spec("mri3d", 3, strength=0.0), seed=0)(image, range(4), 0, 2)
    torch.testing.assert_close(views, image[:, None].expand_as(views), rtol=0, atol=1e-4)


def test_none_preset_returns_the_images() -> None:
    image = torch.randn(2, 1, 8, 8)
    views = BatchAugmentation(preset_spec("none", 2), seed=0)(image, [0, 1], 0, 3)
    torch.testing.assert_close(views, image[:, None].expand(2, 3, 1, 8, 8))


# ---------------------------------------------------------------- each step equals MONAI's


@pytest.mark.parametrize("dims,size", [(2, (20, 24)), (3, (12, 14, 10))])
def test_affine_equals_monai_affine(dims: int, size: tuple) -> None:
    image = torch.rand(1, 1, *size)
    angles = torch.tensor([[0.3, -0.2, 0.1][: 3 if dims == 3 else 1]], dtype=torch.float64)
    scale = torch.tensor([[1.1, 0.9, 1.05][:dims]], dtype=torch.float64)
    shift = torch.tensor([[1.5, -2.0, 0.7][:dims]], dtype=torch.float64)
    rot = _rotation(angles, dims)
    ours = resample(image, rot @ torch.diag_embed(scale), (rot @ shift[:, :, None])[:, :, 0])[0]
    ref = Affine(rotate_params=angles[0].tolist(), scale_params=scale[0].tolist(),
                 translate_params=shift[0].tolist(), padding_mode="zeros", image_only=True)(image[0])
    torch.testing.assert_close(ours, torch.as_tensor(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims,size", [(2, (20, 24)), (3, (12, 14, 10))])
def test_crop_resize_flip_equals_monai_inside_the_crop(dims: int, size: tuple) -> None:
    image = torch.rand(1, 1, *size)
    n = torch.tensor(size, dtype=torch.float64)
    roi = torch.tensor([[9, 11, 7][:dims]], dtype=torch.float64)
    start = torch.tensor([[2, 1, 3][:dims]], dtype=torch.float64)
    sign = torch.ones(1, dims, dtype=torch.float64)
    sign[0, 0] = -1
    ours = resample(image, torch.diag_embed(roi / n * sign), start + (roi - n) / 2)[0]
    crop = image[0][(slice(None), *[slice(int(a), int(a + r)) for a, r in zip(start[0], roi[0], strict=True)])]
    ref = Flip(0)(Resize(list(size), mode="bilinear" if dims == 2 else "trilinear")(crop))
    # One grid_sample reads the crop's true neighbours in the outer half voxel, where MONAI's
    # Resize repeats the crop's edge: equal everywhere else.
    inner = (slice(None), *[slice(2, -2)] * dims)
    torch.testing.assert_close(ours[inner], torch.as_tensor(ref)[inner], rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(9, 7), (6, 8, 5)])
def test_bias_field_basis_equals_monai(size: tuple) -> None:
    basis = bias_field_basis(size, 3)
    coeff = np.random.default_rng(0).uniform(0, 0.1, basis.shape[0])
    ref = RandBiasField(degree=3)._generate_random_field(list(size), 3, coeff.tolist())
    ours = (torch.tensor(coeff, dtype=torch.float32) @ basis.flatten(1)).reshape(size)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    assert basis.shape[0] == (10 if len(size) == 2 else 20)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_and_gamma_equal_monai(dims: int) -> None:
    images = torch.rand(2, 1, *[11] * dims) * 3 - 1
    sigma = torch.tensor([[0.4, 0.9, 0.6][:dims], [1.0, 0.3, 0.25][:dims]], dtype=torch.float64)
    blurred = _blur(images, sigma)
    gamma = torch.tensor([1.3, 0.7], dtype=torch.float64)
    adjusted = _gamma(images, gamma)
    for i in range(2):
        ref = GaussianSmooth(sigma=sigma[i].tolist())(images[i])
        torch.testing.assert_close(blurred[i], torch.as_tensor(ref), rtol=0, atol=1e-6)
        ref = AdjustContrast(float(gamma[i]))(images[i])
        torch.testing.assert_close(adjusted[i], torch.as_tensor(ref), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- same distributions as MONAI

N_VIEWS = 300
#: two-sample z bound: with ~60 comparisons a true equality fails about once in 10^4 runs
Z = 4.5


def _monai_draws(preset: str, dims: int, n: int) -> tuple[dict[str, list], torch.Tensor]:
    """Run the MONAI backend's chain N_VIEWS times on a blob; read each transform's draw."""
    image = _blob(dims, n)
    chain = spec_transforms(preset_spec(preset, dims), size=[n] * dims)
    got: dict[str, list] = {}

    def put(key: str, value) -> None:
        got.setdefault(key, []).append(value)

    outs = []
    for v in range(N_VIEWS):
        chain.set_random_state(seed=view_seed(0, 0, v, 0))
        outs.append(chain(image))
        for t in chain.transforms:
            on = bool(getattr(t, "_do_transform", True))
            if isinstance(t, RandAffine):
                put("affine_on", on)
                if on:
                    grid = t.rand_affine_grid
                    put("rotate", grid.rotate_params)
                    put("scale", grid.scale_params)
                    put("translate", grid.translate_params)
            elif isinstance(t, RandScaleCrop):
                put("crop_size", list(t._size))
                put("crop_offset", [s.start for s in t._slices])
            elif isinstance(t, RandFlip):
                put("flip_on", on)
            elif isinstance(t, RandShiftIntensity):
                put("shift_on", on)
                if on:
                    put("shift", t._offset)
            elif isinstance(t, RandScaleIntensity):
                put("iscale_on", on)
                if on:
                    put("iscale", t.factor)
            elif isinstance(t, RandBiasField):
                put("bias_on", on)
                if on:
                    put("bias", t._coeff)
            elif isinstance(t, RandAdjustContrast):
                put("gamma_on", on)
                if on:
                    put("gamma", t.gamma_value)
            elif isinstance(t, RandGaussianNoise):
                put("noise_on", on)
                if on:
                    put("noise_std", float(np.std(t.noise)))
            elif isinstance(t, RandGaussianSmooth):
                put("blur_on", on)
                if on:
                    put("blur_sigma", [t.x, t.y, t.z][:dims])
    return got, torch.stack(outs)


def _batched_draws(preset: str, dims: int, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    aug = BatchAugmentation(preset_spec(preset, dims), seed=1)  # another seed: independent samples
    p = aug.draw([view_seed(1, 0, v, 0) for v in range(N_VIEWS)], [n] * dims)
    got = {"affine_on": p.affine_on, "rotate": p.rotate[p.affine_on], "scale": p.scale[p.affine_on],
           "translate": p.translate[p.affine_on], "crop_size": p.crop_size, "crop_offset": p.crop_offset,
           "flip_on": p.flip_on, "shift_on": p.shift_on, "shift": p.shift[p.shift_on],
           "iscale_on": p.iscale_on, "iscale": p.iscale[p.iscale_on], "bias_on": p.bias_on,
           "bias": p.bias[p.bias_on], "gamma_on": p.gamma_on, "gamma": p.gamma[p.gamma_on],
           "noise_on": p.noise_on, "noise_std": p.noise_std[p.noise_on], "blur_on": p.blur_on,
           "blur_sigma": p.blur_sigma[p.blur_on]}
    images = _blob(dims, n)[None].expand(N_VIEWS, 1, *[n] * dims)
    return got, aug(images, range(N_VIEWS), 0, views=1)[:, 0]


def _same_mean(a: torch.Tensor, b: torch.Tensor, what: str, allowance: float = 0.0) -> None:
    """Equal means up to Z two-sample standard errors (+ a stated systematic allowance)."""
    a, b = a.double(), b.double()
    se = float(torch.sqrt(a.var(dim=0) / len(a) + b.var(dim=0) / len(b)).max())
    gap = float((a.mean(dim=0) - b.mean(dim=0)).abs().max())
    assert gap <= Z * se + allowance, f"{what}: means {a.mean(0).tolist()} vs {b.mean(0).tolist()}"


def _same_spread(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Equal standard deviations: the sample std of n draws has a standard error of about
    sigma * sqrt((kurtosis - 1) / 4n); uniform and near-uniform draws have kurtosis <= 3."""
    a, b = a.double(), b.double()
    sa, sb = a.std(dim=0), b.std(dim=0)
    se = torch.sqrt(sa**2 * 0.5 / len(a) + sb**2 * 0.5 / len(b))
    assert bool(((sa - sb).abs() <= Z * se + 1e-12).all()), f"{what}: stds {sa.tolist()} vs {sb.tolist()}"


@pytest.mark.parametrize("preset,dims,n", [("mri3d", 3, 12), ("ct3d", 3, 12), ("xray2d", 2, 24)])
def test_parameters_and_outputs_match_the_monai_backend(preset: str, dims: int, n: int) -> None:
    mon, mon_out = _monai_draws(preset, dims, n)
    bat, bat_out = _batched_draws(preset, dims, n)
    assert {k for k in mon} <= set(bat)
    for key, values in mon.items():
        a = torch.tensor(np.asarray(values, dtype=np.float64))
        b = bat[key].double()
        if a.ndim == 1 and key.endswith("_on"):  # a probability: binomial standard errors
            assert len(b) == N_VIEWS
            _same_mean(a, b, key)
            continue
        a = a.reshape(len(a), -1)
        b = b.reshape(len(b), -1)
        assert a.shape[1] == b.shape[1], key
        # noise std is estimated from the drawn noise field in MONAI (n^d voxels): tiny extra spread
        _same_mean(a, b, key)
        if key != "noise_std":
            _same_spread(a, b, key)

    # Output statistics of the views of one smooth image. Both backends interpolate twice (affine,
    # then crop + resize); they differ in the crop's outer half voxel (MONAI repeats the edge).
    # Allowance 0.01 (about 4 % of the image's std) for that border effect.
    def stats(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        image = _blob(dims, n).flatten()
        return torch.stack([flat.mean(1), flat.std(1), (flat - image).abs().mean(1)], dim=1)

    _same_mean(stats(mon_out), stats(bat_out), "view mean / std / mean |view - image|", allowance=0.01)
    _same_spread(stats(mon_out), stats(bat_out), "spread of view statistics")


def _uniform(lo: float, hi: float) -> tuple[float, float]:
    return (lo + hi) / 2, (hi - lo) / 12**0.5


@pytest.mark.parametrize("preset,dims", [("mri3d", 3), ("ct3d", 3), ("xray2d", 2)])
def test_batched_draws_follow_the_spec(preset: str, dims: int) -> None:
    """Many cheap batched draws against the moments the spec states (the MONAI comparison above
    has 300 views only; this one detects a magnitude off by 2 %)."""
    n = 20
    spec = preset_spec(preset, dims)
    p = BatchAugmentation(spec, seed=3).draw(range(10_000), [n] * dims)
    lo = int(np.ceil(spec.crop_min_scale * n))
    expected = {  # key: (values, probability or (mean, std))
        "affine_on": (p.affine_on, spec.affine_prob),
        "rotate": (p.rotate[p.affine_on], _uniform(-spec.rotate, spec.rotate)),
        "scale": (p.scale[p.affine_on], _uniform(1 - spec.scale, 1 + spec.scale)),
        "translate": (p.translate[p.affine_on], _uniform(-spec.translate * n, spec.translate * n)),
        "crop_size": (p.crop_size, ((lo + n) / 2, (((n - lo + 1) ** 2 - 1) / 12) ** 0.5)),
        "flip_on": (p.flip_on, spec.flip_prob),
        "shift_on": (p.shift_on, spec.shift_prob),
        "iscale_on": (p.iscale_on, spec.intensity_scale_prob),
        "bias_on": (p.bias_on, spec.bias_prob),
        "gamma_on": (p.gamma_on, spec.gamma_prob),
        "noise_on": (p.noise_on, spec.noise_prob),
        "noise_std": (p.noise_std[p.noise_on], _uniform(0, spec.noise_std)),
        "blur_on": (p.blur_on, spec.blur_prob),
        "blur_sigma": (p.blur_sigma[p.blur_on], _uniform(*spec.blur_sigma)),
    }
    if spec.shift_prob:
        expected["shift"] = (p.shift[p.shift_on], _uniform(-spec.shift, spec.shift))
        expected["iscale"] = (p.iscale[p.iscale_on], _uniform(-spec.intensity_scale, spec.intensity_scale))
    if spec.bias_prob:
        expected["bias"] = (p.bias[p.bias_on], _uniform(0, spec.bias_coeff))
    if spec.gamma_prob:
        expected["gamma"] = (p.gamma[p.gamma_on], _uniform(*spec.gamma_range))
    for key, (values, want) in expected.items():
        x = values.double().reshape(len(values), -1)
        if isinstance(want, float):  # a probability
            se = (want * (1 - want) / len(x)) ** 0.5
            assert abs(float(x.mean()) - want) <= Z * se + 1e-12, key
            continue
        mean, std = want
        assert float((x.mean(0) - mean).abs().max()) <= Z * std / len(x) ** 0.5 + 1e-12, key
        assert float((x.std(0) / std - 1).abs().max()) <= Z * (0.8 / (4 * len(x))) ** 0.5, key  # uniform: kurtosis 1.8
    # the crop starts uniformly among the valid offsets
    offset = p.crop_offset.double() / (n - p.crop_size.double()).clamp(min=1)
    assert float((offset[p.crop_size < n].mean() - 0.5).abs()) < 0.02


# ---------------------------------------------------------------- dataset, module, config


def test_dataset_batched_backend_serves_images_and_the_module_makes_the_same_views(
    synthetic_3d_manifest: Path,
) -> None:
    data = MultiViewDataset(synthetic_3d_manifest, [0, 1, 2, 3], backend="batched", seed=4)
    batch = collate_multiview([data[i] for i in range(4)])
    assert "views" not in batch and batch["image"].shape == (4, 1, 16, 16, 16)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    data.set_epoch(2)
    want = data.batch_augmentation(batch["image"], batch["index"], 2, 2)

    config = parse_config({"manifest": str(synthetic_3d_manifest), "method": "du", "seed": 4,
                           "encoder": {"arch": "resnet10", "widths": [4, 8, 8, 16]}, "batch_size": 4,
                           "augmentation": {"backend": "batched"}})
    module = PretrainModule(prepare(config).config.model_dump(mode="json"))
    made = module.make_views(batch, epoch=2)
    assert "image" not in made and made["views"].shape == (4, 2, 1, 16, 16, 16)
    torch.testing.assert_close(made["views"], want, rtol=0, atol=0)
    assert module.make_views(made, epoch=2) is made  # already has views


def test_batched_dataset_refuses_a_custom_transform(synthetic_3d_manifest: Path) -> None:
    chain = spec_transforms(preset_spec("mri3d", 3), size=[16] * 3)
    with pytest.raises(MedclInputError, match="batched"):
        MultiViewDataset(synthetic_3d_manifest, augmentation=chain, backend="batched")
    with pytest.raises(MedclInputError, match="gpu"):
        MultiViewDataset(synthetic_3d_manifest, backend="gpu")


def test_config_plain_string_means_the_preset(synthetic_2d_manifest: Path) -> None:
    base = {"manifest": str(synthetic_2d_manifest)}
    plain = parse_config({**base, "augmentation": "xray2d"})
    assert plain.augmentation == parse_config({**base, "augmentation": {"preset": "xray2d"}}).augmentation
    assert plain.augmentation.backend == "batched" and plain.augmentation.strength == 1.0
    both = parse_config({**base, "augmentation": "xray2d"},
                        overrides=["augmentation.backend=monai", "augmentation.strength=0.5"])
    assert (both.augmentation.preset, both.augmentation.backend, both.augmentation.strength) == (
        "xray2d", "monai", 0.5)
    assert parse_config(base, overrides=["augmentation=none"]).augmentation.preset == "none"


@pytest.mark.parametrize("value,culprit", [({"backend": "gpu"}, "augmentation.backend"),
                                           ({"strength": -1}, "augmentation.strength"),
                                           ("mri2d", "augmentation.preset")])
def test_config_errors_name_the_augmentation_key(synthetic_2d_manifest: Path, value, culprit: str) -> None:
    with pytest.raises(MedclInputError, match=culprit.replace(".", r"\.")):
        parse_config({"manifest": str(synthetic_2d_manifest), "augmentation": value})


def test_preset_for_other_dims_fails_before_training(synthetic_2d_manifest: Path) -> None:
    config = parse_config({"manifest": str(synthetic_2d_manifest), "augmentation": "mri3d", "batch_size": 4})
    with pytest.raises(MedclInputError, match="mri3d"):
        prepare(config)


def test_monai_backend_trains_and_old_run_dirs_resume_on_it(synthetic_2d_manifest: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    backends = []
    init = MultiViewDataset.__init__

    def spy(self, *args, **kwargs):
        backends.append(kwargs.get("backend"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(MultiViewDataset, "__init__", spy)
    config = write_config(tmp_path, synthetic_2d_manifest, method="du", epochs=1,
                          augmentation={"preset": "auto", "backend": "monai"})
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", out]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["augmentation"] == {"preset": "xray2d", "backend": "monai", "strength": 1.0}
    # A run dir written before backends existed ("augmentation: xray2d") resumes on the MONAI chain.
    saved["augmentation"] = "xray2d"
    saved["epochs"] = 2
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert cli(["pretrain", "--resume", out]) == 0
    assert RunDir(out).summary()["epochs"] == 2
    assert backends == ["monai", "monai"]


def test_training_makes_every_batch_of_views_after_transfer(synthetic_2d_manifest: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A batched run: the loader serves images, the module's hook makes the views of every training
    batch for the current epoch."""
    calls = []
    make_views = PretrainModule.make_views

    def spy(self, batch, epoch):
        calls.append((epoch, tuple(batch["image"].shape)))
        return make_views(self, batch, epoch)

    monkeypatch.setattr(PretrainModule, "make_views", spy)
    config = write_config(tmp_path, synthetic_2d_manifest, method="du", epochs=2,
                          augmentation={"preset": "auto", "backend": "batched"})
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", out]) == 0
    steps = RunDir(out).summary()["steps"]
    assert len(calls) == steps and steps >= 4
    assert sorted({e for e, _ in calls}) == [0, 1]
    assert {shape for _, shape in calls} == {(4, 1, 32, 32)}
