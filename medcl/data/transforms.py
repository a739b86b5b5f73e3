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
from typing import TYPE_CHECKING, Literal

import numpy as np

from medcl.errors import MedclInputError

if TYPE_CHECKING:
    from monai.transforms import Compose

    from medcl.data.manifest import Manifest

__all__ = [
    "PRESETS",
    "augmentation_transforms",
    "default_preset",
    "preprocessing_fingerprint",
    "preprocessing_transforms",
    "view_seed",
]

AugmentationPreset = Literal["mri3d", "ct3d", "xray2d", "none"]
#: Preset name -> spatial dims it is made for (None: any).
PRESETS: dict[str, int | None] = {"mri3d": 3, "ct3d": 3, "xray2d": 2, "none": None}
#: Bump when the preprocessing chain changes meaning, so old disk caches are not reused.
_PREPROCESSING_VERSION = 1


def preprocessing_transforms(manifest: Manifest) -> Compose:
    """The deterministic chain on ``{"image": path}``: load, orient (3D), resample, scale, resize.

    Output ``{"image": float32 torch.Tensor (C, *size)}`` (plain tensor, no metadata), ready to
    cache. Settings come from ``manifest.image`` and ``manifest.preprocessing``.
    """
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

    pre = manifest.preprocessing
    key = "image"
    chain: list = [load_image_transform(key, channels=manifest.image.channels, dtype=np.float32)]
    if manifest.image.spatial_dims == 3 and pre.orientation:
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


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, subject index, view number)."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(view)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def augmentation_transforms(
    preset: str,
    spatial_dims: int,
    *,
    size: Sequence[int] | None = None,
    strength: float = 1.0,
) -> Compose:
    """A random array chain ``(C, *S) -> (C, *S)`` float32 tensor for one view.

    Presets:
        ``mri3d``: small affine (rotation, scale, translation), random crop + resize, bias field,
        gamma, Gaussian noise, blur. ``ct3d``: affine, crop + resize, left-right flip, intensity
        shift/scale, noise, blur. ``xray2d``: affine, crop + resize, contrast, noise, blur (no
        flips: anatomy is lateralised). ``none``: identity.

    Args:
        size: the images' spatial size; enables crop + resize (without it, a centred zoom).
        strength: scales every magnitude (0 gives near-identity views; 1 the defaults).

    Seed it per view with ``chain.set_random_state(seed=view_seed(...))``.
    Raises MedclInputError for an unknown preset or one made for other spatial dims.
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
    if strength < 0:
        raise MedclInputError(f"augmentation strength must be >= 0, got {strength}")
    if size is not None and len(size) != spatial_dims:
        raise MedclInputError(f"size {list(size)} does not have {spatial_dims} values")
    s = float(strength)
    d = spatial_dims
    chain: list = []
    if preset != "none":
        translate = [0.06 * s * n for n in size] if size is not None else None
        chain.append(
            RandAffine(
                prob=0.9,
                rotate_range=[0.17 * s] * (3 if d == 3 else 1),  # about 10 degrees
                scale_range=[0.1 * s] * d,
                translate_range=translate,
                padding_mode="zeros",
            )
        )
        if size is not None:  # random resized crop
            chain.append(RandScaleCrop(roi_scale=max(0.1, 1 - 0.3 * s), max_roi_scale=1.0, random_size=True))
            chain.append(Resize(spatial_size=list(size), mode="bilinear" if d == 2 else "trilinear"))
        else:
            chain.append(RandZoom(prob=0.5, min_zoom=1.0, max_zoom=1 + 0.3 * s, keep_size=True))
    if preset == "ct3d":
        chain.append(RandFlip(prob=0.5, spatial_axis=0))
        chain.append(RandShiftIntensity(offsets=0.1 * s, prob=0.5))
        chain.append(RandScaleIntensity(factors=0.1 * s, prob=0.5))
    if preset == "mri3d":
        chain.append(RandBiasField(prob=0.3, degree=3, coeff_range=(0.0, 0.1 * s)))
    if preset in ("mri3d", "xray2d"):
        chain.append(RandAdjustContrast(prob=0.5, gamma=(1 / (1 + 0.4 * s), 1 + 0.4 * s)))
    if preset != "none":
        chain.append(RandGaussianNoise(prob=0.5, std=0.1 * s))
        sigma = (0.25 * s, 1.0 * s)
        chain.append(RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=0.2))
    chain.append(EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(chain)
