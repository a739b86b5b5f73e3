"""Benchmark of the downstream tools on arrays (not a test).

Prints wall times for:
1. ``cka_permutation_test`` (1000 permutations) at n = 500, 1000, 2000, 3000 subjects, for a binary
   and a continuous label (the brief: thousands of subjects in seconds);
2. ``probe_features`` (5 outer folds, default grids) at n = 500, 2000 subjects, 512 features.

Usage: ``.venv/bin/python bench/downstream.py [--sizes 500 1000 2000 3000] [--permutations 1000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _rbf(a: np.ndarray) -> np.ndarray:
    d = np.abs(a[:, None] - a[None, :])
    sigma = np.median(d[np.triu_indices(len(a), 1)])
    return np.exp(-(d**2) / (2 * sigma**2))


def main() -> None:
    from medcl.evaluate.attributes import cka_permutation_test
    from medcl.evaluate.probe import probe_features

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 3000])
    parser.add_argument("--permutations", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("CKA + permutation test")
    for n in args.sizes:
        attribute = rng.normal(size=n)
        kernel = _rbf(attribute)
        for kind, label in (("binary", (attribute + rng.normal(size=n) > 0).astype(float)),
                            ("continuous", attribute + rng.normal(size=n))):
            t0 = time.perf_counter()
            cka, p = cka_permutation_test(kernel, label, kind, permutations=args.permutations)
            print(f"  n={n:>5} {kind:<10} CKA={cka:.3f} p={p:.4f}  {time.perf_counter() - t0:6.2f} s")
    print("linear probe (5 folds, inner CV)")
    for n in (500, 2000):
        x = rng.normal(size=(n, 512)).astype(np.float32)
        y = (x[:, 0] + rng.normal(size=n) > 0).astype(float)
        groups = np.arange(n) // 2
        t0 = time.perf_counter()
        result = probe_features(x, y, groups, "binary")
        auc = result.metric("roc_auc").mean
        print(f"  n={n:>5} AUC={auc:.3f}  {time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
