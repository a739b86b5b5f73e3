"""Batched resampling: the per-axis (separable) path and the grid path equal PyTorch's own
``affine_grid`` + ``grid_sample``, and a hand-computed interpolation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medcl.data.resample import affine_grid, axis_interpolation, resample


def _reference(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """torch's affine_grid + grid_sample for a map in centred voxel coordinates (array axis order)."""
    d = matrix.shape[1]
    half = torch.tensor(x.shape[2:], dtype=torch.float64) / 2
    theta_m = matrix * half[None, None, :] / half[None, :, None]
    rev = list(range(d - 1, -1, -1))
    theta = torch.cat([theta_m[:, rev][:, :, rev], (offset / half)[:, rev, None]], dim=2).float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("size", [(9, 14), (7, 10, 6)])
def test_axis_aligned_maps_equal_grid_sample(size: tuple) -> None:
    g = torch.Generator().manual_seed(0)
    b, d = 6, len(size)
    x = torch.rand(b, 2, *size, generator=g)
    sign = torch.where(torch.rand(b, d, generator=g) < 0.5, -1.0, 1.0).double()
    scale = (0.3 + 1.7 * torch.rand(b, d, generator=g, dtype=torch.float64)) * sign  # shrink, stretch, flip
    shift = (torch.rand(b, d, generator=g, dtype=torch.float64) - 0.5) * 2 * torch.tensor(size)  # some far out
    ours = resample(x, torch.diag_embed(scale), shift)
    torch.testing.assert_close(ours, _reference(x, torch.diag_embed(scale), shift), rtol=0, atol=2e-6)
    assert (ours == 0).any()  # some maps read outside the image: zero padding was exercised


def test_rotations_use_the_grid_and_equal_grid_sample() -> None:
    x = torch.rand(3, 1, 8, 11, 6)
    a = torch.tensor(0.4, dtype=torch.float64)
    rot = torch.tensor([[1, 0, 0], [0, a.cos(), -a.sin()], [0, a.sin(), a.cos()]], dtype=torch.float64)
    matrix = torch.stack([rot, rot.T, torch.eye(3, dtype=torch.float64) * 1.2])
    offset = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(resample(x, matrix, offset), _reference(x, matrix, offset), rtol=0, atol=2e-6)
    theta = torch.rand(2, 3, 4)
    torch.testing.assert_close(affine_grid(theta, (5, 6, 7)),
                               F.affine_grid(theta, [2, 1, 5, 6, 7], align_corners=False), rtol=0, atol=1e-6)


def test_axis_interpolation_by_hand() -> None:
    # n = 4, scale 0.5: output o reads input 0.5 o + 0.75 -> rows (.25 .75 0 0), (0 .75 .25 0), ...
    one = torch.ones(1, dtype=torch.float64)
    m = axis_interpolation(0.5 * one, 0 * one, 4)[0]
    expected = torch.tensor([[0.25, 0.75, 0, 0], [0, 0.75, 0.25, 0], [0, 0.25, 0.75, 0], [0, 0, 0.75, 0.25]],
                            dtype=torch.float64)
    torch.testing.assert_close(m, expected)
    # a shift of one voxel past the end: the last output reads outside (zero), flip reverses
    shifted = axis_interpolation(-one, one, 3)[0]
    torch.testing.assert_close(shifted, torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float64))


def test_identity_maps_return_a_copy() -> None:
    x = torch.rand(2, 1, 5, 5)
    out = resample(x, torch.eye(2, dtype=torch.float64).expand(2, 2, 2), torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    out += 1
    assert not torch.equal(out, x)
