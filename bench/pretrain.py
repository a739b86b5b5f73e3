"""Pretraining step time: the model alone (pre-loaded views) against the full pipeline step, for
both augmentation backends side by side, 3D and 2D.

Full step = cached data + augmentation + collate + forward/backward + loss. ``monai``: views made
per view in the loader workers (timed as a block, the model-only step before and after it);
``batched``: the loader serves un-augmented images and the views of the whole batch are made on
the training device (``PretrainModule.make_views``), its full steps alternating with model-only
steps; its ratio is the median over those pairs. Goal: model-only / full >= 0.9. Measure on an
idle machine: under load the model-only step slows most and the ratios drift up to 1 and beyond.
The last line is ``step efficiency: 2D <ratio>, 3D <ratio>`` for the default (batched) backend.

    .venv/bin/python bench/pretrain.py [--steps 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _config(manifest: Path, dims: int, workers: int, backend: str) -> dict:
    return {
        "manifest": str(manifest), "method": "kernel_du", "attributes": ["age"],
        "encoder": {"arch": "resnet18", "widths": [16, 32, 64, 128], "spatial_dims": dims, "in_channels": 1},
        "projection": {"hidden": 128, "dim": 64}, "epochs": 1, "batch_size": 16, "num_workers": workers,
        "cache": "memory", "progress_bar": False, "augmentation": {"backend": backend},
    }


def bench(dims: int, size: int, steps: int, workers: int, root: Path) -> dict[str, float]:
    """Median seconds per step of the full pipeline (``monai``, ``batched``) and of the model-only
    step (fixed views) measured next to each: before and after the MONAI block, alternating with
    the batched steps. Medians: other processes load the machine in bursts."""
    from medcl.data.datasets import MultiViewDataset, collate_multiview
    from medcl.data.synthetic import generate_cohort
    from medcl.pretrain.config import parse_config
    from medcl.pretrain.loader import EpochBatchSampler, ResumableLoader
    from medcl.pretrain.loop import prepare
    from medcl.pretrain.module import PretrainModule

    manifest = generate_cohort(root / f"c{dims}", dims=dims, subjects=16 * (steps + 2) * 2, size=size, seed=0)
    prep = prepare(parse_config(_config(manifest, dims, workers, "batched")))
    cfg = prep.config
    module = PretrainModule(cfg.model_dump(mode="json"))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    data = MultiViewDataset(prep.cohort, prep.train_idx, views=2, cache="memory", attribute_names=["age"],
                            augmentation=cfg.augmentation.preset, backend="monai")
    sampler = EpochBatchSampler(len(data), cfg.batch_size, seed=0)
    loader = ResumableLoader(data, sampler, num_workers=workers, collate_fn=collate_multiview)

    def step(batch: dict, epoch: int) -> None:
        batch = module.make_views(batch, epoch)  # batched backend: views on the device; else as is
        loss, _ = module.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(batch: dict, epoch: int) -> float:
        t0 = time.perf_counter()
        step(batch, epoch)
        return time.perf_counter() - t0

    fixed = module.make_views(next(iter(loader)), 0)  # views made once: the model-only step
    step(fixed, 0)  # warm-up
    model_before = [timed(fixed, 0) for _ in range(steps)]
    sampler.set_epoch(1)
    it = iter(loader)
    step(next(it), 1)  # warm-up: workers start and fill their queue
    monai = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(next(it), 1)
        monai.append(time.perf_counter() - t0)
    del it  # its workers stop: they must not run during the next model-only timings
    model_after = [timed(fixed, 0) for _ in range(steps)]

    # Batched: model-only and full steps alternate, so both see the same load from other
    # processes (the workers only collate cached tensors: they barely load the machine).
    data.backend = "batched"  # same cache, now serving un-augmented images
    sampler.set_epoch(2)
    it = iter(loader)
    step(next(it), 2)
    batched, model_batched = [], []
    for _ in range(steps):
        model_batched.append(timed(fixed, 0))
        t0 = time.perf_counter()
        step(next(it), 2)
        batched.append(time.perf_counter() - t0)
    median = statistics.median
    pairs = [m / f for m, f in zip(model_batched, batched, strict=True)]  # each pair: the same load
    return {"model_monai": median(model_before + model_after), "monai": median(monai),
            "model_batched": median(model_batched), "batched": median(batched), "ratio_batched": median(pairs),
            "ratio_monai": median(model_before + model_after) / median(monai)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 16 x 2 views, resnet18 "
          f"widths [16,32,64,128], cache memory, {args.workers} workers, {args.steps} steps")
    load = os.getloadavg()[0]
    if load > 0.5:  # contention slows the model-only step most: ratios near or above 1 mean nothing
        print(f"warning: load average {load:.1f}: other processes share the cores, the ratios are not valid")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dims, size in ((3, 32), (2, 64)):
            t = bench(dims, size, args.steps, args.workers, Path(tmp))
            ratios[dims] = t["ratio_batched"]
            print(f"{dims}D {size}^{dims} (median model-only / full ms per step, ratio):")
            for name, key in (("monai backend (per view, in workers)", "monai"),
                              ("batched backend (whole batch, on device)", "batched")):
                print(f"    {name:40s} {t[f'model_{key}'] * 1000:6.0f} / {t[key] * 1000:6.0f} ms, "
                      f"ratio {t[f'ratio_{key}']:.2f}")
    print(f"step efficiency: 2D {ratios[2]:.2f}, 3D {ratios[3]:.2f}")


if __name__ == "__main__":
    main()
