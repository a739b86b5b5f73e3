"""Wall time of a comparison with its runs one after the other against side by side (``--jobs``).

A comparison of small encoders on a CPU: one run after the other, each on every core (``jobs`` 1),
against ``--jobs`` runs at a time on ``cores // jobs`` threads each
(:mod:`medcl.evaluate.compare.parallel`). The cohort and the recipe are the 2D demo's
(``medcl.demo.base_config``: ResNet-10 at 32², batch 32) with fewer epochs; every arm x seed is
trained from scratch in a fresh folder. Prints both wall times and ``side-by-side speed-up:
<ratio>``; measure on an idle machine.

    .venv/bin/python bench/parallel_runs.py [--jobs 2] [--epochs 6] [--seeds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medcl.data.synthetic import generate_cohort
from medcl.demo import DemoSettings, base_config
from medcl.evaluate.compare import Arm, CompareSettings, run_comparison
from medcl.evaluate.compare.parallel import available_cores

ARMS = (Arm("du", "du"), Arm("kdu_age", "kernel_du", attributes=("age",)))


def comparison_seconds(folder: Path, manifest: Path, settings: DemoSettings, seeds: int, jobs: int) -> float:
    """Wall seconds of ``ARMS`` x ``seeds`` trained and probed in a fresh ``folder``."""
    base = base_config(manifest, settings, cache_dir=folder / "cache")
    start = time.perf_counter()
    run_comparison(base, ARMS, folder, CompareSettings(labels=["diagnosis"], seeds=seeds, folds=3, repeats=1,
                                                       jobs=jobs))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    settings = DemoSettings(epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = generate_cohort(root / "cohort", dims=2, subjects=settings.subjects, size=settings.size, seed=0,
                                   image_format="png")
        runs = len(ARMS) * args.seeds
        one = comparison_seconds(root / "one", manifest, settings, args.seeds, jobs=1)
        side = comparison_seconds(root / "side", manifest, settings, args.seeds, jobs=args.jobs)
    print(f"{runs} runs of {args.epochs} epochs on {available_cores()} cores: one after the other {one:.1f} s, "
          f"{args.jobs} side by side {side:.1f} s; side-by-side speed-up: {one / side:.2f}")


if __name__ == "__main__":
    main()
