"""Cholesky factorisation of the shifted kernel, fast on CPU at large n.

On CPU, ``torch.linalg.cholesky_ex`` copies its input through a ``tril`` that costs more than
the factorisation itself at n = 4096 (0.9 s against 0.36 s on one core of this project's
machine). Above ``2 * _BLOCK`` rows we factorise by blocks instead, in place: LAPACK on the
diagonal blocks, triangular solves on the panels and matrix products on the lower trailing
block columns (about half the time). Other devices use ``torch.linalg.cholesky_ex`` directly.
"""

from __future__ import annotations

import torch

_BLOCK = 512


def cholesky_lower_(a: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Lower Cholesky factor of the symmetric matrix ``a`` (n, n); may overwrite ``a``.

    Only the lower triangle of ``a`` is read. Returns ``(L, info)``: ``info`` is 0 on success,
    else the 1-based order of the first leading minor that is not positive definite (L is then
    meaningless), as in ``torch.linalg.cholesky_ex``.
    """
    n = a.shape[0]
    if a.device.type != "cpu" or n <= 2 * _BLOCK or not a.is_contiguous():
        chol, info = torch.linalg.cholesky_ex(a)
        return chol, int(info)
    for k0 in range(0, n, _BLOCK):
        k1 = min(k0 + _BLOCK, n)
        diag, info = torch.linalg.cholesky_ex(a[k0:k1, k0:k1])
        if int(info) != 0:
            return a, k0 + int(info)
        a[k0:k1, k0:k1] = diag
        a[k0:k1, k1:] = 0.0
        if k1 == n:
            break
        panel = torch.linalg.solve_triangular(diag.mT, a[k1:, k0:k1], upper=True, left=False)  # A21 L11^-T
        a[k1:, k0:k1] = panel
        for j0 in range(k1, n, _BLOCK):  # A22 -= L21 L21^T, lower block columns only
            j1 = min(j0 + _BLOCK, n)
            a[j0:, j0:j1].addmm_(panel[j0 - k1 :], panel[j0 - k1 : j1 - k1].T, alpha=-1.0)
    return a, 0
