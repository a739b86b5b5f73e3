"""Sampling a batch of images through one affine map per image (the batched augmentation's
spatial steps), on whatever device the images are.

:func:`resample` is ``grid_sample`` (bilinear / trilinear, zero padding, ``align_corners=False``)
with the map given in centred voxel coordinates. When every map of the batch is axis-aligned
(a diagonal matrix: crop + resize, zoom, flip, scale without rotation), the same interpolation is
computed exactly as one small matrix product per axis: linear interpolation is separable, and an
out-of-range neighbour simply has no column. On the CPU that is 6x faster than PyTorch's
trilinear sampler for a batch of 32 views of 32^3 (bench/augment.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

__all__ = ["affine_grid", "axis_interpolation", "cpu_threads", "resample"]


def resample(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """Sample ``x`` (B, C, *S) so that output voxel c reads input voxel ``matrix @ c + offset``
    (B, d, d) and (B, d), centred voxel coordinates, array axis order; returns a new tensor.
    ``threads``: CPU threads of the sampling (None: the current count)."""
    d = matrix.shape[1]
    eye = torch.eye(d, dtype=matrix.dtype)
    if bool(((matrix - eye).abs().amax() < 1e-12) & (offset.abs().amax() < 1e-12)):
        return x.clone()
    diagonal = torch.diagonal(matrix, dim1=1, dim2=2)
    with cpu_threads(x.device, threads):
        if bool((matrix - torch.diag_embed(diagonal)).abs().amax() < 1e-12):
            return _separable(x, diagonal, offset)
        # grid_sample's normalised coordinates (align_corners=False): u = 2 c / n, axes reversed.
        half = torch.tensor(x.shape[2:], dtype=torch.float64) / 2
        theta_m = matrix * half[None, None, :] / half[None, :, None]
        theta_t = offset / half
        rev = list(range(d - 1, -1, -1))
        theta = torch.cat([theta_m[:, rev][:, :, rev], theta_t[:, rev, None]], dim=2)
        grid = affine_grid(theta.to(device=x.device, dtype=x.dtype), x.shape[2:])
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def axis_interpolation(scale: torch.Tensor, shift: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n, n) matrices of linear interpolation along one axis of length ``n``: output index o
    reads input position ``scale * c + shift`` (c = o's centred coordinate); zero outside."""
    centred = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    position = scale[:, None] * centred + shift[:, None] + (n - 1) / 2  # (B, n) input index
    low = torch.floor(position)
    frac = position - low
    low = low.long()
    # Columns 0 and n + 1 collect the neighbours outside the image and are dropped.
    m = torch.zeros(scale.shape[0], n, n + 2, dtype=torch.float64)
    m.scatter_add_(2, (low.clamp(-1, n) + 1)[:, :, None], (1 - frac)[:, :, None])
    m.scatter_add_(2, ((low + 1).clamp(-1, n) + 1)[:, :, None], frac[:, :, None])
    return m[:, :, 1:-1]


def _separable(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """An axis-aligned map as one interpolation matrix product per axis."""
    m = [axis_interpolation(scale[:, k], shift[:, k], x.shape[2 + k]).to(x) for k in range(scale.shape[1])]
    if len(m) == 2:
        return torch.einsum("bih,bchw,bjw->bcij", m[0], x, m[1])
    y = torch.einsum("bjw,bcdhw->bcdhj", m[2], x)
    y = torch.einsum("bjh,bcdhw->bcdjw", m[1], y)
    return torch.einsum("bjd,bcdhw->bcjhw", m[0], y)


def affine_grid(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.affine_grid(theta, align_corners=False)`` built as a sum of per-axis terms (the grid
    is affine in the voxel index): a few broadcast adds instead of a batched matmul per voxel."""
    d = len(size)
    terms = []
    for k, n in enumerate(reversed(list(size))):  # k: grid component axis (x = last array axis)
        base = (torch.arange(n, device=theta.device, dtype=theta.dtype) * 2 + 1) / n - 1
        terms.append(base[None, :, None] * theta[:, None, :, k])  # (b, n, d)
    if d == 2:
        tx, ty = terms
        return (ty + theta[:, None, :, 2])[:, :, None, :] + tx[:, None, :, :]
    tx, ty, tz = terms
    return ((tz + theta[:, None, :, 3])[:, :, None, None, :] + ty[:, None, :, None, :]) + tx[:, None, None, :, :]


@contextmanager
def cpu_threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch CPU threads (nothing changes off the CPU or for None).

    The augmentation's ops are many and small: with two threads on a busy 2-core machine each op's
    fork/join waits for a descheduled thread, and a batch took 5-20x longer (mri3d 32^3: 134 ms on
    one thread, 633 ms on two; xray2d 64^2: 19 vs 400 ms, under load), so they run on one thread.
    The samplings are large enough to use the caller's threads: on 2 idle cores that took the 3D
    step efficiency from 0.44 to 0.55 (bench/pretrain.py)."""
    if device.type != "cpu" or threads is None or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
