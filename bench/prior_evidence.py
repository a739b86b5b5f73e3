"""Does the prior help? DU against kernel DU with an oracle, an informative and a noise attribute.

A thin caller of the comparison engine (:func:`medcl.evaluate.compare.run_comparison`, the one
``medcl compare`` runs): for a cohort manifest it pretrains, with the same encoder, budget and seeds,

- ``du``: decoupled uniformity, no prior (the baseline);
- ``oracle``: kernel DU with a delta kernel on the probed label itself (the quickest way to tell a
  broken pipeline from a weak prior);
- ``kdu:<attributes>``: kernel DU on each attribute set given by ``--informative`` (repeatable);
- ``noise``: kernel DU on a pure-noise continuous attribute (must not hurt);

plus ``random_init`` as the floor; probes the label on the subjects outside the training split
(linear probe, patient-level folds, ``--probe-repeats`` fold draws) and prints the engine's table
paired with DU, then each arm's first/last epoch loss and its kernel's retained fraction and
spread kept (``medcl.kernels.spectrum``). ``--set`` overrides apply to the kernel DU arms only.

The oracle and noise attributes are added to a copy of the table in ``OUT/cohort/``; the user's
files are only read. Runs are reused when their fingerprint matches (``medcl compare``'s rule), so
a table can be extended with more seeds or arms.

    python bench/prior_evidence.py --manifest demo_run/cohort/manifest.yaml --out /tmp/evidence \\
        --informative score1,score2,score3 --seeds 3 [--set prior.instance_weight=0.01 ...]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("random_init", "du", "oracle", "informative", "noise")  # informative: one arm per --informative


def evidence_arms(names: list[str], label: str, informative: list[list[str]], kernel_overrides: list[str]):
    """The comparison's arms, in the order given (``informative`` expands to one arm per set)."""
    from medcl.evaluate.compare.arms import Arm

    extra = tuple(kernel_overrides)
    arms = []
    for name in names:
        if name in ("random_init", "du"):
            arms.append(Arm(name, name))
        elif name == "oracle":
            arms.append(Arm("oracle", "kernel_du", attributes=(f"oracle_{label}",), overrides=extra))
        elif name == "noise":
            arms.append(Arm("noise", "kernel_du", attributes=("noise",), overrides=extra))
        elif name == "informative":
            arms += [Arm(f"kdu:{'+'.join(a)}", "kernel_du", attributes=tuple(a), overrides=extra) for a in informative]
        else:
            raise SystemExit(f"--arms: unknown arm {name!r}; choose from {', '.join(ARMS)}")
    return arms


def base_config(args: argparse.Namespace, manifest: Path):
    """The budget every arm shares (the engine changes method, prior and seed only)."""
    from medcl.pretrain.config import parse_config

    w = [int(x) for x in args.widths.split(",")]
    return parse_config({
        "manifest": str(manifest), "method": "du", "attributes": [], "views": 2,
        "encoder": {"arch": "resnet18", "widths": w, "first_stride": args.first_stride, "max_pool": False},
        "projection": {"hidden": 4 * w[-1], "dim": 2 * w[-1]},
        "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 1e-4, "warmup_epochs": 1},
        "epochs": args.epochs, "batch_size": args.batch_size, "num_workers": 0, "cache": "memory",
        "log_every_n_steps": 1, "checkpoint": {"every_n_epochs": 0}, "progress_bar": False,
    }, source="bench/prior_evidence.py")


def run_extras(run_path: Path, cohort: Any, train: np.ndarray, batch_size: int) -> dict[str, float]:
    """First/last epoch loss of a run and, for a kernel run, its kernel's retained fraction and spread kept."""
    from medcl.kernels.spectrum import batch_spectrum
    from medcl.pretrain.run_dir import RunDir

    run = RunDir(run_path)
    loss = run.metrics()["train/loss_epoch"].dropna().to_numpy()
    extras = {"loss_first": float(loss[0]), "loss_last": float(loss[-1])}
    kernel = run.kernel()
    if kernel is not None:
        values, missing, _ = cohort.attribute_matrix([t.name for t in kernel.terms])
        row = batch_spectrum(kernel, values[train], missing[train], batch_size=batch_size, lam=run.config().loss.lam)
        extras["retained"], extras["kept"] = row.retained_fraction, row.kept_spread
    return extras


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="diagnosis", help="binary label probed (and used by the oracle)")
    parser.add_argument("--informative", action="append", default=None,
                        help="attributes of an informative arm, comma-separated (repeatable; default: the scores)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds-1 (finished ones are reused)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--widths", default="8,16,32,64")
    parser.add_argument("--first-stride", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--probe-repeats", type=int, default=3, help="fold draws of the probe CV per run")
    parser.add_argument("--set", action="append", default=[], help="config override for the kernel DU arms")
    args = parser.parse_args()

    from medcl.data.check_attributes import with_check_attributes
    from medcl.data.cohort import Cohort
    from medcl.evaluate.compare import CompareSettings, run_comparison

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    manifest = with_check_attributes(args.manifest.resolve(), args.label, args.out / "cohort")
    informative = [i.split(",") for i in (args.informative or ["score1,score2,score3"])]
    arms = evidence_arms(args.arms.split(","), args.label, informative, args.set)
    settings = CompareSettings(labels=[args.label], seeds=args.seeds, folds=args.folds,
                               repeats=args.probe_repeats, baseline="du", title="bench/prior_evidence.py")
    result = run_comparison(base_config(args, manifest), arms, args.out, settings, on_line=print)
    print("\n" + result.table())

    cohort = Cohort.from_manifest(manifest)
    train = np.flatnonzero(np.asarray(cohort.split()) == "train")
    print(f"\nkernel arms with {' '.join(args.set) or 'the defaults'}; means over seeds")
    print(f"{'arm':<28} {'AUC by seed':<24} {'loss first→last':>17} {'retained':>8} {'spread kept':>11}")
    for arm in arms:
        rows = sorted((r for r in result.rows if r["arm"] == arm.name), key=lambda r: r["seed"])
        aucs = " ".join(f"{r['value']:.3f}" for r in rows)
        if not arm.trains:
            print(f"{arm.name:<28} {aucs:<24}")
            continue
        extras = [run_extras(args.out / "runs" / arm.dirname / f"seed{r['seed']}", cohort, train, args.batch_size)
                  for r in rows]
        loss = f"{np.mean([e['loss_first'] for e in extras]):+.2f}→{np.mean([e['loss_last'] for e in extras]):+.2f}"
        retained, kept = (f"{np.mean([e[k] for e in extras]):.2f}" if k in extras[0] else ""
                          for k in ("retained", "kept"))
        print(f"{arm.name:<28} {aucs:<24} {loss:>17} {retained:>8} {kept:>11}")
    print(f"wall time: {result.elapsed_s:.0f} s")


if __name__ == "__main__":
    main()
