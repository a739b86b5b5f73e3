"""Pretraining step time: the model alone (pre-loaded tensors) against the full pipeline step
(cached data + per-view augmentation + collate + forward/backward + loss), 3D and 2D.

Goal: ratio model-only / full >= 0.9 with the cache on (the data pipeline hides behind the model).

    .venv/bin/python bench/pretrain.py [--steps 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _config(manifest: Path, dims: int, workers: int) -> dict:
    return {
        "manifest": str(manifest), "method": "kernel_du", "attributes": ["age"],
        "encoder": {"arch": "resnet18", "widths": [16, 32, 64, 128], "spatial_dims": dims, "in_channels": 1},
        "projection": {"hidden": 128, "dim": 64}, "epochs": 1, "batch_size": 16, "num_workers": workers,
        "cache": "memory", "progress_bar": False,
    }


def bench(dims: int, size: int, steps: int, workers: int, root: Path) -> tuple[float, float]:
    from medcl.data.datasets import MultiViewDataset, collate_multiview
    from medcl.data.synthetic import generate_cohort
    from medcl.train.config import parse_config
    from medcl.train.loader import EpochBatchSampler, ResumableLoader
    from medcl.train.module import PretrainModule
    from medcl.train.pretrain import prepare

    manifest = generate_cohort(root / f"c{dims}", dims=dims, subjects=16 * (steps + 2) * 2, size=size, seed=0)
    prep = prepare(parse_config(_config(manifest, dims, workers)))
    cfg = prep.config
    module = PretrainModule(cfg.model_dump(mode="json"))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    data = MultiViewDataset(prep.cohort, prep.train_idx, views=2, cache="memory", attribute_names=["age"])
    sampler = EpochBatchSampler(len(data), cfg.batch_size, seed=0)
    loader = ResumableLoader(data, sampler, num_workers=workers, collate_fn=collate_multiview)

    def step(batch: dict) -> None:
        loss, _ = module.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    it = iter(loader)
    fixed = next(it)
    step(fixed)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step(fixed)
    model_only = (time.perf_counter() - t0) / steps

    sampler.set_epoch(1)
    it = iter(loader)
    step(next(it))  # warm-up: workers start
    t0 = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    full = (time.perf_counter() - t0) / steps
    return model_only, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 16 x 2 views, resnet18 "
          f"widths [16,32,64,128], cache memory, {args.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        for dims, size in ((3, 32), (2, 64)):
            model_only, full = bench(dims, size, args.steps, args.workers, Path(tmp))
            print(f"{dims}D {size}^{dims}: model-only {model_only * 1000:7.1f} ms/step, "
                  f"full pipeline {full * 1000:7.1f} ms/step, ratio {model_only / full:.2f}")


if __name__ == "__main__":
    main()
