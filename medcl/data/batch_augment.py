"""Random augmentation of whole batches of views as tensor operations on the training device.

The per-view MONAI chain (:func:`medcl.data.transforms.augmentation_transforms`) costs about
1.7 ms per 2D view on a CPU worker and does not move to the GPU. :class:`BatchAugmentation` draws
the same distributions (one :class:`~medcl.data.transforms.AugmentationSpec`) and applies them to
``(n, C, *S)`` images at once:

- the spatial steps take two samplings of the whole batch (bilinear / trilinear, zero padding,
  :func:`medcl.data.resample.resample`): the affine, then random crop + resize (or zoom) and flip
  folded into one axis-aligned map (exact per-axis matrix products, no ``grid_sample``). MONAI
  also interpolates twice; folding everything into one sampling gives visibly sharper views;
- intensity steps (shift, scale, bias field, gamma, noise, blur) run only on the views that drew
  them, vectorised over those views; blur is a separable grouped convolution.

Each view's parameters come from a ``torch.Generator`` seeded by
:func:`~medcl.data.transforms.view_seed` ``(seed, epoch, subject index, view)``: views do not
depend on the device, the worker count or which subjects share the batch. The noise field is
drawn on the images' device from a per-view generator, so it is reproducible per device type.

Why own code: Kornia is slower on the CPU for the 2D preset and has only the affine of the 3D
presets; MONAI and TorchIO transform one sample at a time (numbers: docs/internals.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache

import torch
import torch.nn.functional as F

from medcl.data.resample import cpu_threads, resample
from medcl.data.transforms import AugmentationSpec, view_seed

__all__ = ["BatchAugmentation", "ViewParameters", "bias_field_basis"]

# Positions of each parameter's uniforms in one view's draw (a fixed layout: presets differ
# only in probabilities and magnitudes, so a view's draw never shifts when a preset changes).
_LAYOUT = {
    "affine_on": 1, "rotate": 3, "scale": 3, "translate": 3, "crop_size": 3, "crop_offset": 3,
    "zoom_on": 1, "zoom": 1, "flip_on": 1, "shift_on": 1, "shift": 1, "iscale_on": 1, "iscale": 1,
    "bias_on": 1, "bias": 20, "gamma_on": 1, "gamma": 1, "noise_on": 1, "noise_std": 1, "blur_on": 1,
    "blur_sigma": 3, "noise_seed": 1,
}
_SLICES: dict[str, slice] = {}
_start = 0
for _name, _n in _LAYOUT.items():
    _SLICES[_name] = slice(_start, _start + _n)
    _start += _n
_DRAWS = _start


@dataclass
class ViewParameters:
    """The drawn parameters of B views (all float64 / bool / int64 tensors on the CPU).

    ``matrix`` (B, d, d) and ``offset`` (B, d) are the affine: they map a voxel's centred
    coordinates in the affine's output to the input's (array axis order); ``crop_matrix`` and
    ``crop_shift`` map a view voxel to the affine's output (crop + resize or zoom, flip). As in
    MONAI, the two are sampled one after the other. The other fields are per view;
    a ``*_on`` flag says whether the step was drawn (its value is unused otherwise).
    """

    matrix: torch.Tensor
    offset: torch.Tensor
    crop_matrix: torch.Tensor
    crop_shift: torch.Tensor
    affine_on: torch.Tensor
    rotate: torch.Tensor
    scale: torch.Tensor
    translate: torch.Tensor
    crop_size: torch.Tensor
    crop_offset: torch.Tensor
    zoom_on: torch.Tensor
    zoom: torch.Tensor
    flip_on: torch.Tensor
    shift_on: torch.Tensor
    shift: torch.Tensor
    iscale_on: torch.Tensor
    iscale: torch.Tensor
    bias_on: torch.Tensor
    bias: torch.Tensor
    gamma_on: torch.Tensor
    gamma: torch.Tensor
    noise_on: torch.Tensor
    noise_std: torch.Tensor
    blur_on: torch.Tensor
    blur_sigma: torch.Tensor
    noise_seed: torch.Tensor

    def select(self, keep: torch.Tensor) -> ViewParameters:
        """The parameters of the views where ``keep`` (B,) is True."""
        return ViewParameters(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})


class BatchAugmentation:
    """Draw and apply ``spec``'s random augmentation to a batch of images, V views each.

    Args:
        spec: the distributions (:func:`medcl.data.transforms.preset_spec`).
        seed: base seed of the views (the run's seed).

    Call ``aug(images, index, epoch, views)`` with images ``(n, C, *S)`` float on any device and
    ``index`` (n,) the subjects' cohort rows; returns ``(n, V, C, *S)`` float32 views. View ``v``
    of subject ``index[i]`` depends only on (seed, epoch, index[i], v, the image).
    """

    def __init__(self, spec: AugmentationSpec, seed: int = 0) -> None:
        if spec.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spec.spatial_dims}")
        if spec.bias_prob > 0 and _n_bias(spec.spatial_dims, spec.bias_degree) > _LAYOUT["bias"]:
            raise ValueError(f"bias_degree {spec.bias_degree} needs more coefficients than {_LAYOUT['bias']}")
        self.spec = spec
        self.seed = int(seed)

    def __call__(
        self, images: torch.Tensor, index: torch.Tensor | Sequence[int], epoch: int, views: int = 2
    ) -> torch.Tensor:
        d = self.spec.spatial_dims
        if images.ndim != d + 2:
            raise ValueError(f"images must be (n, C, *S) with {d} spatial dims, got shape {tuple(images.shape)}")
        idx = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        if len(idx) != images.shape[0]:
            raise ValueError(f"{len(idx)} subject indices for {images.shape[0]} images")
        n = images.shape[0]
        seeds = [view_seed(self.seed, epoch, i, v) for i in idx for v in range(views)]
        params = self.draw(seeds, tuple(images.shape[2:]))
        threads = torch.get_num_threads()
        with cpu_threads(images.device, 1):
            x = images.float().repeat_interleave(views, dim=0)  # (n·V, C, *S): view-major per subject
            out = self.apply(x, params, sampler_threads=threads)
        return out.reshape(n, views, *images.shape[1:])

    def draw(self, seeds: Sequence[int], size: Sequence[int]) -> ViewParameters:
        """The parameters of one view per seed, for images of spatial ``size``."""
        rows = [torch.rand(_DRAWS, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
                for s in seeds]
        u = torch.stack(rows) if rows else torch.zeros(0, _DRAWS, dtype=torch.float64)
        return _parameters(self.spec, u, [int(n) for n in size])

    def apply(self, x: torch.Tensor, p: ViewParameters, sampler_threads: int | None = None) -> torch.Tensor:
        """Apply drawn parameters to ``x`` (B, C, *S), one view per row; returns a new tensor.
        ``sampler_threads``: CPU threads of the two samplings (None: the current count)."""
        spec = self.spec
        # Two samplings, as MONAI's RandAffine then RandScaleCrop + Resize: one composed map
        # would give sharper views (one interpolation instead of two).
        x = resample(x, p.matrix, p.offset, sampler_threads)
        x = resample(x, p.crop_matrix, p.crop_shift, sampler_threads)
        if spec.shift_prob > 0:
            x += (p.shift * p.shift_on).to(x).reshape(-1, *[1] * (x.ndim - 1))
        if spec.intensity_scale_prob > 0:
            factor = torch.where(p.iscale_on, 1 + p.iscale, torch.ones_like(p.iscale))
            x *= factor.to(x).reshape(-1, *[1] * (x.ndim - 1))
        if spec.bias_prob > 0:
            _on_subset(x, p, p.bias_on, lambda v, sel: v * torch.exp(_bias_log_field(sel.bias, v, spec)).unsqueeze(1))
        if spec.gamma_prob > 0:
            _on_subset(x, p, p.gamma_on, lambda v, sel: _gamma(v, sel.gamma))
        if spec.noise_prob > 0:
            _on_subset(x, p, p.noise_on, lambda v, sel: _add_noise(v, sel.noise_std, sel.noise_seed))
        if spec.blur_prob > 0:
            _on_subset(x, p, p.blur_on, lambda v, sel: _blur(v, sel.blur_sigma))
        return x


def _n_bias(dims: int, degree: int) -> int:
    if dims == 2:
        return (degree + 1) * (degree + 2) // 2
    return (degree + 1) * (degree + 2) * (degree + 3) // 6


def _parameters(spec: AugmentationSpec, u: torch.Tensor, size: list[int]) -> ViewParameters:
    """Turn uniforms ``u`` (B, _DRAWS) into parameters, vectorised over views (float64)."""
    d = spec.spatial_dims
    b = u.shape[0]

    def take(name: str) -> torch.Tensor:
        return u[:, _SLICES[name]]

    def sym(name: str, mag: float) -> torch.Tensor:  # U(-mag, mag)
        return (2 * take(name) - 1) * mag

    def flag(name: str, prob: float) -> torch.Tensor:
        return take(name)[:, 0] < prob

    n = torch.tensor(size, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64).expand(b, d, d)
    affine_on = flag("affine_on", spec.affine_prob)
    rotate = sym("rotate", spec.rotate)[:, : (3 if d == 3 else 1)]
    scale = 1 + sym("scale", spec.scale)[:, :d]
    translate = sym("translate", spec.translate)[:, :d] * n
    on = affine_on[:, None]
    rotate, scale, translate = rotate * on, torch.where(on, scale, 1.0), translate * on
    rot = _rotation(rotate, d)

    if spec.crop_min_scale is not None:  # as MONAI's RandScaleCrop(random_size=True): integer sizes
        low = torch.ceil(spec.crop_min_scale * n - 1e-9)
        crop_size = torch.floor(low + take("crop_size")[:, :d] * (n + 1 - low)).clamp(max=n)
        crop_offset = torch.floor(take("crop_offset")[:, :d] * (n - crop_size + 1)).clamp(max=n - crop_size)
    else:
        crop_size, crop_offset = n.expand(b, d).clone(), torch.zeros(b, d, dtype=torch.float64)
    zoom_on = flag("zoom_on", spec.zoom_prob)
    zoom = torch.where(zoom_on, 1 + take("zoom")[:, 0] * (spec.zoom_max - 1), 1.0)
    flip_on = flag("flip_on", spec.flip_prob)

    # Output voxel c (centred coordinates) -> flip -> crop/resize, zoom -> scale, translate, rotate.
    flip = torch.ones(b, d, dtype=torch.float64)
    flip[:, spec.flip_axis] = torch.where(flip_on, -1.0, 1.0)
    resize = crop_size / n / zoom[:, None]
    linear = rot @ scale[:, :, None].mul(eye)
    offset = (rot @ translate[:, :, None])[:, :, 0]
    crop_matrix = (resize * flip)[:, :, None].mul(eye)
    crop_shift = crop_offset + (crop_size - n) / 2

    gamma_lo, gamma_hi = spec.gamma_range
    s_lo, s_hi = spec.blur_sigma
    return ViewParameters(
        matrix=linear, offset=offset, crop_matrix=crop_matrix, crop_shift=crop_shift,
        affine_on=affine_on, rotate=rotate, scale=scale, translate=translate,
        crop_size=crop_size.long(), crop_offset=crop_offset.long(), zoom_on=zoom_on, zoom=zoom,
        flip_on=flip_on,
        shift_on=flag("shift_on", spec.shift_prob), shift=sym("shift", spec.shift)[:, 0],
        iscale_on=flag("iscale_on", spec.intensity_scale_prob),
        iscale=sym("iscale", spec.intensity_scale)[:, 0],
        bias_on=flag("bias_on", spec.bias_prob),
        bias=take("bias")[:, : _n_bias(d, spec.bias_degree)] * spec.bias_coeff,
        gamma_on=flag("gamma_on", spec.gamma_prob), gamma=gamma_lo + take("gamma")[:, 0] * (gamma_hi - gamma_lo),
        noise_on=flag("noise_on", spec.noise_prob), noise_std=take("noise_std")[:, 0] * spec.noise_std,
        blur_on=flag("blur_on", spec.blur_prob), blur_sigma=s_lo + take("blur_sigma")[:, :d] * (s_hi - s_lo),
        noise_seed=(take("noise_seed")[:, 0] * 2.0**53).long(),
    )


def _rotation(angles: torch.Tensor, d: int) -> torch.Tensor:
    """MONAI's ``create_rotate`` (2D; 3D intrinsic XYZ: Rx @ Ry @ Rz), batched: (B, d, d)."""
    b = angles.shape[0]
    cos, sin = angles.cos(), angles.sin()
    if d == 2:
        r = torch.empty(b, 2, 2, dtype=angles.dtype)
        r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1] = cos[:, 0], -sin[:, 0], sin[:, 0], cos[:, 0]
        return r
    out = torch.eye(3, dtype=angles.dtype).repeat(b, 1, 1)
    for axis in range(3):
        r = torch.eye(3, dtype=angles.dtype).repeat(b, 1, 1)
        c, s = cos[:, axis], sin[:, axis]
        i, j = [(1, 2), (0, 2), (0, 1)][axis]
        sign = -1.0 if axis == 1 else 1.0  # about y the sine signs are swapped (right-handed)
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -sign * s, sign * s, c
        out = out @ r
    return out


def _on_subset(x: torch.Tensor, p: ViewParameters, on: torch.Tensor,
               fn: Callable[[torch.Tensor, ViewParameters], torch.Tensor]) -> None:
    """``x[on] = fn(x[on], p[on])`` in place: a step runs only on the views that drew it."""
    if not bool(on.any()):
        return
    if bool(on.all()):
        x.copy_(fn(x, p))
        return
    rows = on.nonzero()[:, 0].to(x.device)
    x[rows] = fn(x[rows], p.select(on))


@lru_cache(maxsize=16)
def bias_field_basis(size: tuple[int, ...], degree: int, device: str = "cpu") -> torch.Tensor:
    """Legendre products of MONAI's ``RandBiasField`` on a ``[-1, 1]`` grid: (K, *size) float32.

    Row k multiplies coefficient k (MONAI's coefficient order: 2D the lower triangle of the
    (degree+1)^2 matrix, row-major; 3D every (i, j, k) with i + j + k <= degree).
    """
    coords = [torch.linspace(-1.0, 1.0, n, dtype=torch.float64) for n in size]
    polys = [_legendre(c, degree) for c in coords]  # each (degree+1, n)
    if len(size) == 2:
        pairs = [(i, j) for i in range(degree + 1) for j in range(i + 1)]
        rows = [polys[0][i][:, None] * polys[1][j][None, :] for i, j in pairs]
    else:
        triples = [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i)
                   for k in range(degree + 1 - i - j)]
        rows = [polys[0][i][:, None, None] * polys[1][j][None, :, None] * polys[2][k][None, None, :]
                for i, j, k in triples]
    return torch.stack(rows).to(device=device, dtype=torch.float32)


def _legendre(x: torch.Tensor, degree: int) -> torch.Tensor:
    out = [torch.ones_like(x), x]
    for k in range(1, degree):
        out.append(((2 * k + 1) * x * out[k] - k * out[k - 1]) / (k + 1))
    return torch.stack(out[: degree + 1])


def _bias_log_field(coeffs: torch.Tensor, x: torch.Tensor, spec: AugmentationSpec) -> torch.Tensor:
    """(b, K) coefficients -> (b, *S) log bias field on ``x``'s grid."""
    basis = bias_field_basis(tuple(x.shape[2:]), spec.bias_degree, str(x.device))
    return (coeffs.to(basis) @ basis.flatten(1)).reshape(coeffs.shape[0], *x.shape[2:])


def _gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """MONAI's AdjustContrast per view: ((x - min) / (range + 1e-7)) ** gamma * range + min."""
    shape = (-1, *[1] * (x.ndim - 1))
    flat = x.flatten(1)
    lo, hi = flat.amin(dim=1).reshape(shape), flat.amax(dim=1).reshape(shape)
    rng = hi - lo
    return ((x - lo) / (rng + 1e-7)).pow(gamma.to(x).reshape(shape)) * rng + lo


def _add_noise(x: torch.Tensor, std: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Add N(0, std_v^2) noise to each view, drawn from a generator seeded per view."""
    noise = torch.empty_like(x)
    for row, seed in enumerate(seeds.tolist()):
        g = torch.Generator(device=x.device).manual_seed(int(seed))
        torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype, out=noise[row])
    return x + noise * std.to(x).reshape(-1, *[1] * (x.ndim - 1))


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """MONAI's GaussianFilter (erf kernel, 4 sigma, zero padding) with per-view, per-axis sigma:
    one grouped 1-D convolution per axis over all the views that drew blur."""
    b, c = x.shape[:2]
    d = x.ndim - 2
    tails = torch.floor(torch.clamp(sigma * 4.0, min=0.5) + 0.5).long()  # MONAI's int(max(4s, .5) + .5)
    t = int(tails.max())
    pos = torch.arange(-t, t + 1, dtype=torch.float64)
    k = 0.70710678 / sigma.abs()[:, :, None]  # (b, d, 1)
    kern = 0.5 * (torch.erf(k * (pos + 0.5)) - torch.erf(k * (pos - 0.5)))
    kern = kern.clamp(min=0) * (pos.abs()[None, None, :] <= tails[:, :, None])
    kern = kern.to(x)
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    y = x.reshape(1, b * c, *x.shape[2:])
    for axis in range(d):
        w = kern[:, axis].repeat_interleave(c, dim=0)  # (b·c, 2t+1)
        shape = [b * c, 1] + [1] * d
        shape[2 + axis] = 2 * t + 1
        pad = [0] * d
        pad[axis] = t
        y = conv(y, w.reshape(shape), padding=tuple(pad), groups=b * c)
    return y.reshape(x.shape)
