"""Does the prior help? DU against kernel DU with an oracle, an informative and a noise attribute.

For a cohort manifest, pretrains (on the manifest's training split) with the same encoder, budget
and seeds:

- ``du``: decoupled uniformity, no prior;
- ``oracle``: kernel DU with a delta kernel on the probed label itself (the quickest way to tell a
  broken pipeline from a weak prior);
- ``kdu:<attributes>``: kernel DU on each attribute set given by ``--informative`` (repeatable);
- ``noise``: kernel DU on a pure-noise continuous attribute (must not hurt);

plus ``random_init`` as the floor, then probes the label on the subjects outside the training split
(linear probe, patient-level folds) and prints a table paired with DU over the seeds, with each arm's
first/last epoch loss and its kernel's retained fraction (``medcl.kernels.spectrum``).

The oracle and noise attributes are added to a copy of the table in ``OUT/cohort/``; the user's
files are only read. Runs are reused when their config is unchanged, so a table can be extended.

    python bench/prior_evidence.py --manifest demo_run/cohort/manifest.yaml --out /tmp/evidence \\
        --informative score1,score2,score3 --seeds 3 [--set prior.instance_weight=0.01 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("random_init", "du", "oracle", "informative", "noise")  # informative: one arm per --informative


def base_config(args: argparse.Namespace, manifest: Path) -> dict[str, Any]:
    w = [int(x) for x in args.widths.split(",")]
    return {
        "manifest": str(manifest),
        "views": 2,
        "encoder": {"arch": "resnet18", "widths": w, "first_stride": args.first_stride, "max_pool": False},
        "projection": {"hidden": 4 * w[-1], "dim": 2 * w[-1]},
        "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 1e-4, "warmup_epochs": 1},
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "num_workers": 0,
        "cache": "memory",
        "log_every_n_steps": 1,
        "checkpoint": {"every_n_epochs": 0},
        "progress_bar": False,
    }


def arm_config(arm: str, args: argparse.Namespace, manifest: Path, seed: int) -> dict[str, Any]:
    from medcl.pretrain.config import apply_overrides

    cfg = {**base_config(args, manifest), "seed": seed}
    fixed = {"du": [], "oracle": [f"oracle_{args.label}"], "noise": ["noise"]}
    attributes = fixed[arm] if arm in fixed else arm.removeprefix("kdu:").split("+")
    cfg.update(method="du" if arm == "du" else "kernel_du", attributes=attributes)
    return apply_overrides(cfg, args.set if arm != "du" else [])


def loss_curve(run: Any) -> tuple[float, float]:
    metrics = run.metrics()
    epoch_loss = metrics["train/loss_epoch"].dropna().to_numpy()
    return float(epoch_loss[0]), float(epoch_loss[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="diagnosis", help="binary label probed (and used by the oracle)")
    parser.add_argument("--informative", action="append", default=None,
                        help="attributes of an informative arm, comma-separated (repeatable; default: the scores)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--widths", default="8,16,32,64")
    parser.add_argument("--first-stride", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--probe-repeats", type=int, default=3, help="repeated cross-validation draws per run")
    parser.add_argument("--set", action="append", default=[], help="config override for the kernel DU arms")
    args = parser.parse_args()

    import torch

    from medcl.data.check_attributes import with_check_attributes
    from medcl.data.cohort import Cohort
    from medcl.data.datasets import ImageDataset
    from medcl.evaluate.features import encode_dataset
    from medcl.evaluate.probe import probe_features
    from medcl.kernels.spectrum import batch_spectrum
    from medcl.models.encoders import EncoderSpec, build_encoder
    from medcl.pretrain.config import parse_config
    from medcl.pretrain.loop import pretrain
    from medcl.pretrain.run_dir import RunDir

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    manifest = with_check_attributes(args.manifest.resolve(), args.label, args.out / "cohort")
    cohort = Cohort.from_manifest(manifest)
    split = np.asarray(cohort.split())
    train, held_out = np.flatnonzero(split == "train"), np.flatnonzero(split != "train")
    images = ImageDataset(cohort, held_out, cache="memory")
    y = cohort.label(args.label)[held_out]
    groups = np.asarray(cohort.patient_ids, dtype=object)[held_out]
    informative = [f"kdu:{'+'.join(i.split(','))}" for i in (args.informative or ["score1,score2,score3"])]
    arms = [a for name in args.arms.split(",") for a in (informative if name == "informative" else [name])]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for arm in arms:
            info: dict[str, Any] = {"arm": arm, "seed": seed}
            if arm == "random_init":
                torch.manual_seed(seed)
                w = [int(x) for x in args.widths.split(",")]
                spec = EncoderSpec(arch="resnet18", widths=w, first_stride=args.first_stride, max_pool=False,
                                   spatial_dims=cohort.manifest.image.spatial_dims,
                                   in_channels=cohort.manifest.image.channels)
                encoder = build_encoder(spec).eval()
            else:
                data = arm_config(arm, args, manifest, seed)
                key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
                path = args.out / "runs" / f"{arm.replace(':', '-')}-{key}" / f"seed{seed}"
                run = RunDir(path)
                if not run.is_finished():
                    if path.exists():
                        import shutil

                        shutil.rmtree(path)
                    run = pretrain(parse_config(data, source=arm), path)
                encoder = run.load_encoder()
                info["loss_first"], info["loss_last"] = loss_curve(run)
                kernel = run.kernel() if arm != "du" else None
                if kernel is not None:
                    values, missing, _ = cohort.attribute_matrix([t.name for t in kernel.terms])
                    lam = run.config().loss.lam
                    info["retained"] = batch_spectrum(kernel, values[train], missing[train],
                                                      batch_size=args.batch_size, lam=lam).retained_fraction
            feats = encode_dataset(encoder, images, batch_size=64, progress=False)
            info["auc"] = float(np.mean([  # repeated CV: the fold draw is a large share of the noise
                probe_features(feats, y, groups, "binary", n_folds=args.folds, seed=1000 * r + seed)
                .metric("roc_auc").mean for r in range(args.probe_repeats)]))
            info["feature_sd"] = float(feats.std(axis=0).mean())
            rows.append(info)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()}),
                  flush=True)
    print_table(rows, arms, args)
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


def print_table(rows: list[dict[str, Any]], arms: list[str], args: argparse.Namespace) -> None:
    base = {r["seed"]: r["auc"] for r in rows if r["arm"] == "du"}
    print(f"\n{args.label} AUC on held-out subjects; kernel arms with {' '.join(args.set) or 'defaults'}")
    print(f"{'arm':<24} {'AUC by seed':<24} {'mean':>6} {'Δ vs DU':>8} {'sd Δ':>6} {'ahead':>6} "
          f"{'loss first→last':>17} {'retained':>8}")
    for arm in arms:
        sel = [r for r in rows if r["arm"] == arm]
        aucs = np.array([r["auc"] for r in sel])
        diffs = np.array([r["auc"] - base[r["seed"]] for r in sel if r["seed"] in base])
        loss = (f"{np.mean([r['loss_first'] for r in sel]):+.2f}→{np.mean([r['loss_last'] for r in sel]):+.2f}"
                if "loss_first" in sel[0] else "")
        retained = f"{np.mean([r['retained'] for r in sel]):.2f}" if "retained" in sel[0] else ""
        sd = f"{diffs.std(ddof=1):.3f}" if len(diffs) > 1 else ""
        print(f"{arm:<24} {' '.join(f'{a:.3f}' for a in aucs):<24} {aucs.mean():>6.3f} "
              f"{diffs.mean():>+8.3f} {sd:>6} {int((diffs > 0).sum()):>3}/{len(diffs)} {loss:>17} {retained:>8}")


if __name__ == "__main__":
    main()
