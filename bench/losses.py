"""Benchmark: medcl's decoupled uniformity against the paper's official formulation.

Forward + backward time at B = 256, 1024, 4096 subjects, d = 128, V = 2, float32, with and
without a prior kernel (RBF on a random attribute, median-heuristic bandwidth), and each one's
absolute error against a float64 computation (``torch.linalg.solve`` + full-matrix logsumexp).

    .venv/bin/python bench/losses.py [--sizes 256 1024 4096] [--repeats 3] [--threads N]

Timing is the best of ``--repeats`` runs after one warm-up, the two implementations alternating
(the machine may be shared: compare the ratios, measured in the same run). On an oversubscribed
machine OpenMP threads spin at every barrier; ``--threads 1`` gives steadier ratios there.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from medcl.kernels import KernelTerm, PriorKernel
from medcl.losses import decoupled_uniformity

T, LAM = 2.0, 0.01


def official(z: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
    """The paper's code: explicit inverse, n x n product, pdist over the centroids."""
    mu = F.normalize(z, p=2, dim=-1).mean(dim=1)
    if kernel is not None:
        n = kernel.shape[0]
        weights = torch.inverse(kernel + LAM * torch.eye(n, dtype=kernel.dtype)) @ kernel
        mu = weights @ mu
    return torch.pdist(mu, p=2).pow(2).mul(-T).exp().mean().log()


def float64_reference(z: torch.Tensor, kernel: torch.Tensor | None) -> float:
    z = z.detach().double()
    mu = F.normalize(z, dim=-1).mean(dim=1)
    n = mu.shape[0]
    if kernel is not None:
        k = kernel.double()
        mu = torch.linalg.solve(k + LAM * torch.eye(n, dtype=k.dtype), k @ mu)
    sq = (mu * mu).sum(1)
    logits = -T * (sq[:, None] + sq[None, :] - 2 * mu @ mu.T)
    logits.fill_diagonal_(-math.inf)
    return float(torch.logsumexp(logits.flatten(), 0) - math.log(n * (n - 1)))


def _fwd_bwd(fn, z: torch.Tensor, kernel: torch.Tensor | None) -> tuple[float, float, float]:
    x = z.detach().clone().requires_grad_()
    wall, cpu = time.perf_counter(), time.process_time()
    loss = fn(x, kernel)
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu, loss.item()


def time_pair(fns, z: torch.Tensor, kernel: torch.Tensor | None, repeats: int) -> list[tuple[float, float, float]]:
    """Best wall time, best process CPU time and value of each function.

    Runs alternate so that load spikes hit both alike; CPU time (all threads of this process)
    is the steadier measure on a shared machine.
    """
    for fn in fns:  # warm-up
        _fwd_bwd(fn, z, kernel)
    best = [(math.inf, math.inf, math.nan)] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            wall, cpu, value = _fwd_bwd(fn, z, kernel)
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu), value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, d=128, V=2, t={T}, lam={LAM}")
    header = (
        f"{'B':>5} {'kernel':>6} | {'medcl s':>8} {'official s':>10} {'speed-up':>8} | "
        f"{'cpu medcl':>9} {'cpu official':>12} {'cpu ratio':>9} | {'medcl |err|':>11} {'official |err|':>14}"
    )
    print(header)
    print("-" * len(header))
    for b in args.sizes:
        z = torch.randn(b, 2, 128)
        attribute = torch.randn(b, 1)
        prior = PriorKernel([KernelTerm("y", "rbf", 0, 1)]).fit(attribute)
        for kernel in (None, prior(attribute)):
            ref = float64_reference(z, kernel)
            (t_medcl, c_medcl, v_medcl), (t_off, c_off, v_off) = time_pair(
                [lambda x, k: decoupled_uniformity(x, k, t=T, lam=LAM), official], z, kernel, args.repeats
            )
            print(
                f"{b:>5} {('rbf' if kernel is not None else 'none'):>6} | {t_medcl:>8.4f} {t_off:>10.4f} "
                f"{t_off / t_medcl:>7.2f}x | {c_medcl:>9.4f} {c_off:>12.4f} {c_off / c_medcl:>8.2f}x | "
                f"{abs(v_medcl - ref):>11.2e} {abs(v_off - ref):>14.2e}"
            )


if __name__ == "__main__":
    main()
