"""Image transforms: a deterministic preprocessing chain (cached) and random augmentation presets.

The split follows MONAI's habit: :func:`preprocessing_transforms` is a dictionary chain on key
``"image"`` whose output is cached (in memory or on disk, keyed by :func:`preprocessing_fingerprint`);
:func:`augmentation_transforms` is an *array* chain applied once per view. MONAI dictionary random
transforms on several keys draw the same parameters for every key, so views must never share a
draw: seed the chain per view with :func:`view_seed` (``chain.set_random_state(seed=...)``), which
makes every view a function of (seed, epoch, subject index, view number) only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from medcl.errors import MedclInputError

if TYPE_CHECKING:
    from monai.transforms import Compose

    from medcl.data.manifest import ImageSpec, Manifest, PreprocessingSpec

__all__ = [
    "BACKENDS",
    "PRESETS",
    "AugmentationSpec",
    "augmentation_transforms",
    "default_preset",
    "preprocessing_chain",
    "preprocessing_fingerprint",
    "preprocessing_transforms",
    "preset_spec",
    "spec_transforms",
    "view_seed",
]

AugmentationPreset = Literal["mri3d", "ct3d", "xray2d", "none"]
#: Preset name -> spatial dims it is made for (None: any).
PRESETS: dict[str, int | None] = {"mri3d": 3, "ct3d": 3, "xray2d": 2, "none": None}
#: Where the random part runs: on whole batches on the training device, or per view in MONAI.
BACKENDS: tuple[str, ...] = ("batched", "monai")
#: Bump when the preprocessing chain changes meaning, so old disk caches are not reused.
_PREPROCESSING_VERSION = 1


def preprocessing_transforms(manifest: Manifest) -> Compose:
    """The deterministic chain on ``{"image": path}``: load, orient (3D), resample, scale, resize.

    Output ``{"image": float32 torch.Tensor (C, *size)}`` (plain tensor, no metadata), ready to
    cache. Settings come from ``manifest.image`` and ``manifest.preprocessing``.
    """
    return preprocessing_chain(manifest.image, manifest.preprocessing)


def preprocessing_chain(image: ImageSpec, pre: PreprocessingSpec) -> Compose:
    """:func:`preprocessing_transforms` from the two manifest sections it reads (a saved model keeps them)."""
    import torch
    from monai.transforms import (
        Compose,
        EnsureTyped,
        NormalizeIntensityd,
        Orientationd,
        ResizeWithPadOrCropd,
        ScaleIntensityd,
        ScaleIntensityRangePercentilesd,
        Spacingd,
    )

    from medcl.data.readers import load_image_transform

    key = "image"
    chain: list = [load_image_transform(key, channels=image.channels, dtype=np.float32)]
    if image.spatial_dims == 3 and pre.orientation:
        chain.append(Orientationd(key, axcodes=pre.orientation, labels=None))
    if pre.spacing is not None:
        chain.append(Spacingd(key, pixdim=pre.spacing, mode="bilinear"))
    intensity = pre.intensity
    if intensity.method == "zscore":
        chain.append(NormalizeIntensityd(key, nonzero=intensity.nonzero, channel_wise=True))
    elif intensity.method == "minmax":
        chain.append(ScaleIntensityd(key, minv=0.0, maxv=1.0, channel_wise=True))
    elif intensity.method == "percentile":
        chain.append(
            ScaleIntensityRangePercentilesd(
                key, intensity.lower, intensity.upper, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
            )
        )
    chain.append(ResizeWithPadOrCropd(key, spatial_size=pre.size))
    chain.append(EnsureTyped(key, data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(chain)


def preprocessing_fingerprint(manifest: Manifest) -> str:
    """A short hash of everything that changes the preprocessed image (for cache keys).

    Covers the image kind and channels, every preprocessing setting and the chain's version; not
    the table, attributes or labels (they do not change the cached images).
    """
    import monai

    spec = {
        "version": _PREPROCESSING_VERSION,
        "monai": ".".join(monai.__version__.split(".")[:2]),
        "kind": manifest.image.kind,
        "channels": manifest.image.channels,
        "preprocessing": manifest.preprocessing.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def default_preset(spatial_dims: int) -> AugmentationPreset:
    """The preset ``augmentation="auto"`` picks: ``mri3d`` for 3D, ``xray2d`` for 2D."""
    return "mri3d" if spatial_dims == 3 else "xray2d"


def resolve_preset(preset: str, spatial_dims: int) -> str:
    """``preset`` itself, or :func:`default_preset` for ``"auto"``."""
    return default_preset(spatial_dims) if preset == "auto" else preset


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, subject index, view number)."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(view)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclass(frozen=True)
class AugmentationSpec:
    """The distributions of one preset's random augmentation, read by both backends.

    Every field is a probability or a magnitude; a probability of 0 switches the step off.
    Spatial: with probability ``affine_prob`` an affine about the image centre with rotation
    angles uniform in +-``rotate`` radians (1 angle in 2D, 3 in 3D, XYZ order), per-axis scale
    ``1 + U(-scale, scale)`` and per-axis translation ``U(-translate, translate)`` times the
    axis length; then (``crop_min_scale`` set) a crop whose per-axis size is an integer uniform
    in ``[ceil(crop_min_scale * n), n]`` at a uniform integer offset, resized back to ``n``; or
    (``zoom_prob``) a centred zoom ``U(1, zoom_max)``; then a flip of axis ``flip_axis``.
    Intensity, in this order: shift ``+U(-shift, shift)``, scale ``*(1 + U(-s, s))``, bias field
    ``exp(sum of Legendre polynomials up to bias_degree, coefficients U(0, bias_coeff))``, gamma
    ``U(gamma_range)`` on the view's min-max range, Gaussian noise with std ``U(0, noise_std)``,
    Gaussian blur with per-axis sigma ``U(blur_sigma)`` (erf kernel, 4 sigma, zero padding).
    """

    spatial_dims: int
    affine_prob: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    crop_min_scale: float | None = None
    zoom_prob: float = 0.0
    zoom_max: float = 1.0
    flip_prob: float = 0.0
    flip_axis: int = 0
    shift_prob: float = 0.0
    shift: float = 0.0
    intensity_scale_prob: float = 0.0
    intensity_scale: float = 0.0
    bias_prob: float = 0.0
    bias_degree: int = 3
    bias_coeff: float = 0.0
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (1.0, 1.0)
    noise_prob: float = 0.0
    noise_std: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 0.0)


def preset_spec(preset: str, spatial_dims: int, *, strength: float = 1.0, crop: bool = True) -> AugmentationSpec:
    """The distributions of ``preset`` (see :func:`augmentation_transforms`) at ``strength``.

    ``crop``: random crop + resize (the images' size is known); otherwise a centred zoom.
    Raises MedclInputError for an unknown preset, one made for other spatial dims, or a
    negative strength.
    """
    if preset not in PRESETS:
        raise MedclInputError(f"augmentation preset {preset!r} is unknown; choose one of {sorted(PRESETS)}")
    made_for = PRESETS[preset]
    if made_for is not None and made_for != spatial_dims:
        raise MedclInputError(
            f"augmentation preset {preset!r} is for {made_for}D images, got {spatial_dims}D; "
            f"use {default_preset(spatial_dims)!r} or 'none'"
        )
    if spatial_dims not in (2, 3):
        raise MedclInputError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if not strength >= 0:
        raise MedclInputError(f"augmentation strength must be >= 0, got {strength}")
    s = float(strength)
    if preset == "none":
        return AugmentationSpec(spatial_dims)
    opts: dict = {
        "affine_prob": 0.9, "rotate": 0.17 * s, "scale": 0.1 * s, "translate": 0.06 * s,  # ~10 degrees
        "noise_prob": 0.5, "noise_std": 0.1 * s, "blur_prob": 0.2, "blur_sigma": (0.25 * s, 1.0 * s),
    }
    if crop:
        opts["crop_min_scale"] = max(0.1, 1 - 0.3 * s)
    else:
        opts.update(zoom_prob=0.5, zoom_max=1 + 0.3 * s)
    if preset == "ct3d":
        opts.update(flip_prob=0.5, flip_axis=0, shift_prob=0.5, shift=0.1 * s,
                    intensity_scale_prob=0.5, intensity_scale=0.1 * s)
    if preset == "mri3d":
        opts.update(bias_prob=0.3, bias_degree=3, bias_coeff=0.1 * s)
    if preset in ("mri3d", "xray2d"):
        opts.update(gamma_prob=0.5, gamma_range=(1 / (1 + 0.4 * s), 1 + 0.4 * s))
    return AugmentationSpec(spatial_dims, **opts)


def augmentation_transforms(
    preset: str,
    spatial_dims: int,
    *,
    size: Sequence[int] | None = None,
    strength: float = 1.0,
) -> Compose:
    """A random array chain ``(C, *S) -> (C, *S)`` float32 tensor for one view (MONAI backend).

    Presets (their distributions: :func:`preset_spec`):
        ``mri3d``: small affine (rotation, scale, translation), random crop + resize, bias field,
        gamma, Gaussian noise, blur. ``ct3d``: affine, crop + resize, left-right flip, intensity
        shift/scale, noise, blur. ``xray2d``: affine, crop + resize, contrast, noise, blur (no
        flips: anatomy is lateralised). ``none``: identity.

    Args:
        size: the images' spatial size; enables crop + resize (without it, a centred zoom).
        strength: scales every magnitude (0 gives near-identity views; 1 the defaults).

    Seed it per view with ``chain.set_random_state(seed=view_seed(...))``. The batched backend
    (:class:`medcl.data.batch_augment.BatchAugmentation`) reads the same :class:`AugmentationSpec`.
    Raises MedclInputError for an unknown preset or one made for other spatial dims.
    """
    spec = preset_spec(preset, spatial_dims, strength=strength, crop=size is not None)
    if size is not None and len(size) != spatial_dims:
        raise MedclInputError(f"size {list(size)} does not have {spatial_dims} values")
    return spec_transforms(spec, size=size)


def spec_transforms(spec: AugmentationSpec, *, size: Sequence[int] | None = None) -> Compose:
    """The MONAI per-view chain that draws from ``spec``'s distributions (see :func:`preset_spec`).

    ``size`` gives the translation range in voxels (``spec.translate`` is a fraction of it);
    without it there is no translation. The order is the one the batched backend follows:
    affine, crop + resize (or zoom), flip, shift, scale, bias field, gamma, noise, blur.
    """
    import torch
    from monai.transforms import (
        Compose,
        EnsureType,
        RandAdjustContrast,
        RandAffine,
        RandBiasField,
        RandFlip,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandScaleCrop,
        RandScaleIntensity,
        RandShiftIntensity,
        RandZoom,
        Resize,
    )

    d = spec.spatial_dims
    chain: list = []
    if spec.affine_prob > 0:
        translate = [spec.translate * n for n in size] if size is not None else None
        chain.append(
            RandAffine(
                prob=spec.affine_prob,
                rotate_range=[spec.rotate] * (3 if d == 3 else 1),
                scale_range=[spec.scale] * d,
                translate_range=translate,
                padding_mode="zeros",
            )
        )
    if spec.crop_min_scale is not None:
        if size is None:
            raise MedclInputError("an augmentation with random crop + resize needs the images' size")
        chain.append(RandScaleCrop(roi_scale=spec.crop_min_scale, max_roi_scale=1.0, random_size=True))
        chain.append(Resize(spatial_size=list(size), mode="bilinear" if d == 2 else "trilinear"))
    if spec.zoom_prob > 0:
        chain.append(RandZoom(prob=spec.zoom_prob, min_zoom=1.0, max_zoom=spec.zoom_max, keep_size=True))
    if spec.flip_prob > 0:
        chain.append(RandFlip(prob=spec.flip_prob, spatial_axis=spec.flip_axis))
    if spec.shift_prob > 0:
        chain.append(RandShiftIntensity(offsets=spec.shift, prob=spec.shift_prob))
    if spec.intensity_scale_prob > 0:
        chain.append(RandScaleIntensity(factors=spec.intensity_scale, prob=spec.intensity_scale_prob))
    if spec.bias_prob > 0:
        chain.append(RandBiasField(prob=spec.bias_prob, degree=spec.bias_degree, coeff_range=(0.0, spec.bias_coeff)))
    if spec.gamma_prob > 0:
        chain.append(RandAdjustContrast(prob=spec.gamma_prob, gamma=spec.gamma_range))
    if spec.noise_prob > 0:
        chain.append(RandGaussianNoise(prob=spec.noise_prob, std=spec.noise_std))
    if spec.blur_prob > 0:
        sigma = spec.blur_sigma
        chain.append(RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=spec.blur_prob))
    chain.append(EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(chain)
