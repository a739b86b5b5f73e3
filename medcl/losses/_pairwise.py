"""Stable, memory-light ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` over one triangle.

This is the uniformity potential shared by decoupled uniformity and alignment + uniformity.
The official formulation ``pdist(x).pow(2).mul(-t).exp().mean().log()`` underflows for large t
(every term rounds to 0 and the log gives -inf) and its CPU backward is slow. Here the squared
distances come from the Gram matrix (``|a|^2 + |b|^2 - 2<a,b>``), only the strict upper
triangle is formed, in row blocks, and the log-sum-exp is taken block by block with its own
maximum, so the result is finite whatever t. The gradient has the closed form
``dL/dx = -2t (diag(W 1) x - W x)`` with W the symmetric softmax weights of the pairs, which
costs two matrix products per block and no (n, n, d) tensor.
"""

from __future__ import annotations

import math

import torch

# Row-block height and the largest triangle (in elements) kept from forward for backward;
# above it the blocks are recomputed in backward so memory stays O(block * n).
_BLOCK_ROWS = 512
_SAVE_LIMIT = 1 << 26


def _block_logits(x: torch.Tensor, sq: torch.Tensor, a: int, b: int, t: float, mask: torch.Tensor) -> torch.Tensor:
    """Logits -t ||x_i - x_j||^2 for rows [a, b) and columns [a+1, n), -inf where j <= i."""
    g = x[a:b] @ x[a + 1 :].T
    g.mul_(2.0 * t).sub_(sq[a:b, None] * t).sub_(sq[None, a + 1 :] * t).clamp_(max=0.0)
    rows = b - a
    g[:, :rows].masked_fill_(~mask[:rows, :rows], -math.inf)
    return g


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(a, min(a + _BLOCK_ROWS, n - 1)) for a in range(0, n - 1, _BLOCK_ROWS)]


class _LogMeanGaussianPotential(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, t: float) -> torch.Tensor:  # type: ignore[override]
        n = x.shape[0]
        sq = (x * x).sum(dim=1)
        mask = torch.ones(_BLOCK_ROWS, _BLOCK_ROWS, dtype=torch.bool, device=x.device).triu_()
        save = n * (n - 1) // 2 <= _SAVE_LIMIT
        maxima, log_sums, kept = [], [], []
        for a, b in _blocks(n):
            block = _block_logits(x, sq, a, b, t, mask)
            m = block.max()
            block.sub_(m).exp_()
            maxima.append(m)
            log_sums.append(block.sum().log())
            if save:
                kept.append(block)
        block_max = torch.stack(maxima)
        total = torch.logsumexp(block_max + torch.stack(log_sums), dim=0)
        ctx.t = t
        ctx.save = save
        ctx.save_for_backward(x, sq, total, block_max, *kept)
        return total - math.log(n * (n - 1) / 2)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, sq, total, block_max, *kept = ctx.saved_tensors
        t = ctx.t
        n = x.shape[0]
        mask = None
        weighted = torch.zeros_like(x)  # W x
        row_sums = torch.zeros_like(sq)  # W 1
        for k, (a, b) in enumerate(_blocks(n)):
            if ctx.save:
                # kept[k] = exp(logits - block max); rescale to exp(logits - total)
                u = kept[k] * (block_max[k] - total).exp()
            else:
                if mask is None:
                    mask = torch.ones(_BLOCK_ROWS, _BLOCK_ROWS, dtype=torch.bool, device=x.device).triu_()
                u = _block_logits(x, sq, a, b, t, mask).sub_(total).exp_()
            # u holds the upper-triangle weights; W = u + u^T, each pair carrying half.
            weighted[a:b] += u @ x[a + 1 :]
            weighted[a + 1 :] += u.T @ x[a:b]
            row_sums[a:b] += u.sum(dim=1)
            row_sums[a + 1 :] += u.sum(dim=0)
        # dL/dx_k = -2t sum_j W_kj (x_k - x_j), W = u + u^T (weights of unordered pairs, sum 1).
        grad = (row_sums[:, None] * x - weighted).mul_(-2.0 * t)
        return grad * grad_out, None


def log_mean_gaussian_potential(x: torch.Tensor, t: float) -> torch.Tensor:
    """``log( 2/(n(n-1)) * sum_{i<j} exp(-t * ||x_i - x_j||^2) )`` for x of shape (n, d), n >= 2.

    Numerically stable for any t > 0 and differentiable in x (not in t).
    """
    return _LogMeanGaussianPotential.apply(x, t)
