"""Spread over seeds and float paths of what tests/pretrain/test_prior_learning.py asserts.

Runs the test's own ``train_and_probe`` (the demo's cohort and recipe) for the oracle prior, plain
DU and the random-init encoder at each seed, and prints one JSON line per seed, so the test's
floor can be kept below the oracle's worst seed and above DU's typical one. Run it once per float
path the test must hold on, e.g.:

    python bench/prior_test_margin.py --seeds 0-7
    ATEN_CPU_CAPABILITY=default python bench/prior_test_margin.py --seeds 0-7
    OMP_NUM_THREADS=1 python bench/prior_test_margin.py --seeds 0-3
    python bench/prior_test_margin.py --seeds 0-3 --backend monai
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path


def seed_list(text: str) -> list[int]:
    """``0-7`` or ``0,1,2``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-7")
    parser.add_argument("--backend", default=None, help="augmentation backend (default: the demo's)")
    parser.add_argument("--arms", default="oracle,du,random_init")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pretrain"))
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "medcl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import test_prior_learning as t
    import torch

    from medcl.data.check_attributes import oracle_attribute, with_check_attributes
    from medcl.data.synthetic import generate_cohort
    from medcl.demo import DemoSettings

    s = DemoSettings()
    root = Path(tempfile.mkdtemp(prefix="medcl-margin-"))
    manifest = generate_cohort(root / "cohort", dims=2, subjects=s.subjects, size=s.size, seed=0, image_format="png")
    manifest = with_check_attributes(manifest, "diagnosis", root / "checked")
    arms = {"oracle": ("kernel_du", [oracle_attribute("diagnosis")]), "du": ("du", []),
            "random_init": ("random_init", [])}
    overrides = {"augmentation": {"preset": "auto", "backend": args.backend, "strength": s.augmentation_strength}} \
        if args.backend else {}
    path = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "backend": args.backend or s.augmentation_backend,
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY")}
    print(json.dumps(path), flush=True)
    for seed in seed_list(args.seeds):
        row: dict[str, object] = {"seed": seed}
        for arm in args.arms.split(","):
            start = time.perf_counter()
            method, attributes = arms[arm]
            auc, _ = t.train_and_probe(manifest, root / f"{arm}{seed}", method, attributes, seed, **overrides)
            row[arm], row[f"{arm}_s"] = round(auc, 3), round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
