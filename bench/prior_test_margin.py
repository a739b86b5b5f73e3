"""Spread over seeds of the oracle-vs-DU gap that tests/pretrain/test_prior_learning.py asserts.

Runs the test's own ``train_and_probe`` (same cohort, encoder and budget) for DU and the oracle
prior at each instance weight, and prints one JSON line per seed, so the test's margin can be kept
below the smallest gap actually seen:

    python bench/prior_test_margin.py --seeds 0,1,2,3 --instance-weights 0,0.01
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--instance-weights", default="0")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pretrain"))
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import test_prior_learning as t

    from medcl.data.check_attributes import oracle_attribute, with_check_attributes
    from medcl.data.synthetic import generate_cohort

    root = Path(tempfile.mkdtemp(prefix="medcl-margin-"))
    manifest = generate_cohort(root / "cohort", dims=2, subjects=t.SUBJECTS, size=t.SIZE, seed=0,
                               image_format="png")
    manifest = with_check_attributes(manifest, "diagnosis", root / "checked")
    for seed in (int(s) for s in args.seeds.split(",")):
        du, _ = t.train_and_probe(manifest, root / f"du{seed}", "du", [], seed)
        row: dict[str, object] = {"seed": seed, "du": round(du, 3)}
        for w in (float(x) for x in args.instance_weights.split(",")):
            oracle, loss = t.train_and_probe(manifest, root / f"oracle{seed}-{w}", "kernel_du",
                                             [oracle_attribute("diagnosis")], seed, prior={"instance_weight": w})
            row[f"gap_w{w}"] = round(oracle - du, 3)
            row[f"loss_w{w}"] = [round(float(loss[0]), 2), round(float(loss[-1]), 2)]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
