"""Benchmark of the multi-view data pipeline on a synthetic 3D cohort (not a test).

Prints:
1. samples/s of ``MultiViewDataset`` + ``make_loader`` (2 views, ``mri3d`` preset) for
   cache = none / disk (cold, then warm) / memory;
2. peak resident memory of one epoch at 1x and 10x cohort size for cache = none / disk, each in a
   fresh process, and the growth ratio (goal <= 1.2x: nothing loads the whole cohort).

Usage: ``python bench/data.py [--subjects 50] [--size 32] [--workers 0] [--batch 16]``
Memory: ``ru_maxrss`` (peak) and the RSS after the epoch; cache = memory is shown as the control
that *does* grow with the cohort.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _epoch(manifest: Path, cache: str, cache_dir: Path, workers: int, batch: int) -> dict:
    from medcl.data.datasets import MultiViewDataset, make_loader

    t0 = time.perf_counter()
    ds = MultiViewDataset(manifest, views=2, cache=cache, cache_dir=cache_dir, seed=0)
    built = time.perf_counter() - t0
    rates = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        t = time.perf_counter()
        n = sum(len(b["index"]) for b in make_loader(ds, batch, num_workers=workers, seed=epoch))
        rates.append(n / (time.perf_counter() - t))
    return {"build_s": built, "first_epoch": rates[0], "second_epoch": rates[1], "n": len(ds)}


def _memory_child(manifest: str, cache: str, cache_dir: str, batch: int) -> None:
    """Run in a fresh process: one epoch, report peak RSS (MiB) and the RSS after imports."""
    import torch  # noqa: F401  (count imports in the baseline, not in the growth)
    from monai.transforms import Compose  # noqa: F401

    import medcl.data.datasets  # noqa: F401

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = _epoch(Path(manifest), cache, Path(cache_dir), 0, batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/statm") as fh:  # Linux: resident pages now
        now = int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    print(json.dumps({"base_mib": base, "peak_mib": peak, "end_mib": now, **out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _memory_child(*args.child, batch=args.batch)
        return

    from medcl.data.synthetic import generate_cohort

    with tempfile.TemporaryDirectory(prefix="medcl-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        small = generate_cohort(root / "x1", subjects=args.subjects, size=args.size, seed=0)
        gen_s = time.perf_counter() - t
        print(f"generate_cohort: {args.subjects} subjects at {args.size}^3 in {gen_s:.2f} s")

        print(f"\nthroughput, 2 views, mri3d, batch {args.batch}, workers {args.workers} (samples/s):")
        disk = root / "cache"
        for cache in ("none", "disk", "memory"):
            r = _epoch(small, cache, disk, args.workers, args.batch)
            extra = " (1st epoch fills the disk cache)" if cache == "disk" else ""
            print(
                f"  cache={cache:6s} build {r['build_s']:5.2f} s  epoch 1 {r['first_epoch']:6.1f}  "
                f"epoch 2 {r['second_epoch']:6.1f}{extra}"
            )

        big = generate_cohort(root / "x10", subjects=10 * args.subjects, size=args.size, seed=0)
        print("\npeak RSS of one epoch in a fresh process (MiB; baseline = after imports):")
        for cache in ("none", "disk", "memory"):
            peaks = []
            for label, manifest in (("1x", small), ("10x", big)):
                cmd = [sys.executable, __file__, "--batch", str(args.batch), "--child"]
                cmd += [str(manifest), cache, str(root / f"cache-{label}")]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                peaks.append(res["peak_mib"])
                print(
                    f"  cache={cache:6s} {label:3s} n={res['n']:5d}  after imports {res['base_mib']:6.1f}  "
                    f"peak {res['peak_mib']:6.1f} (+{res['peak_mib'] - res['base_mib']:5.1f})  "
                    f"at end {res['end_mib']:6.1f}"
                )
            goal = "(control: holds the cohort)" if cache == "memory" else "(goal <= 1.2x)"
            print(f"  cache={cache:6s} peak growth 10x/1x: {peaks[1] / peaks[0]:.3f}x {goal}")


if __name__ == "__main__":
    main()
