"""Pretraining step time: the model alone (pre-loaded views) against the full pipeline step, for
both augmentation backends side by side, 3D and 2D.

Full step = cached data + augmentation + collate + forward/backward + loss. ``monai``: views made
per view in the loader workers; ``batched``: whole batches, either in the main process after
collate (``PretrainModule.make_views``, the path of an accelerator) or in the loader workers'
collate (the path of a CPU run). Goal: model-only / full >= 0.9.
The last line is ``step efficiency: 2D <ratio>, 3D <ratio>`` for what a CPU run does by default:
the batched backend, its views made in the loader workers (``CollateWithViews``). The batched
backend's GPU path (views made in the main process after transfer) is timed too.

    .venv/bin/python bench/pretrain.py [--steps 5] [--workers 2]
"""

from __future__ import annotations

import argparse
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
    """Median seconds per step of the full pipeline (``monai``; ``workers``: batched in the loader
    workers; ``batched``: batched in the main process) and of the model-only step (fixed views)
    measured next to each: before and after a block, or alternating with it. Medians: other
    processes load the machine in bursts."""
    from medcl.data.datasets import CollateWithViews, MultiViewDataset, collate_multiview
    from medcl.data.synthetic import generate_cohort
    from medcl.train.config import parse_config
    from medcl.train.loader import EpochBatchSampler, ResumableLoader
    from medcl.train.module import PretrainModule
    from medcl.train.pretrain import prepare

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

    def block(pipeline: ResumableLoader, epoch: int) -> list[float]:
        sampler.set_epoch(epoch)
        it = iter(pipeline)
        step(next(it), epoch)  # warm-up: workers start and fill their queue
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step(next(it), epoch)
            out.append(time.perf_counter() - t0)
        del it  # its workers stop: they must not run during the next model-only timings
        return out

    fixed = module.make_views(next(iter(loader)), 0)  # views made once: the model-only step
    step(fixed, 0)  # warm-up
    model_a = [timed(fixed, 0) for _ in range(steps)]
    monai = block(loader, 1)
    model_b = [timed(fixed, 0) for _ in range(steps)]
    data.backend = "batched"  # same cache, now serving un-augmented images
    in_workers = block(ResumableLoader(data, sampler, num_workers=workers, collate_fn=CollateWithViews(data)), 2)
    model_c = [timed(fixed, 0) for _ in range(steps)]

    # Views made in the main process: model-only and full steps alternate (the workers only
    # collate, so they barely load the machine during the model-only steps).
    sampler.set_epoch(3)
    it = iter(loader)
    step(next(it), 3)
    on_device, model_d = [], []
    for _ in range(steps):
        model_d.append(timed(fixed, 0))
        t0 = time.perf_counter()
        step(next(it), 3)
        on_device.append(time.perf_counter() - t0)
    median = statistics.median
    return {"model_monai": median(model_a + model_b), "monai": median(monai),
            "model_workers": median(model_b + model_c), "workers": median(in_workers),
            "model_batched": median(model_d), "batched": median(on_device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 16 x 2 views, resnet18 "
          f"widths [16,32,64,128], cache memory, {args.workers} workers, {args.steps} steps")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dims, size in ((3, 32), (2, 64)):
            t = bench(dims, size, args.steps, args.workers, Path(tmp))
            ratios[dims] = t["model_workers"] / t["workers"]
            print(f"{dims}D {size}^{dims} (model-only / full ms per step, ratio):")
            for name, key in (("monai backend (per view, in workers)", "monai"),
                              ("batched, after transfer (GPU path)", "batched"),
                              ("batched, in the workers (CPU path)", "workers")):
                model = t["model_monai" if key == "monai" else f"model_{key}"]
                print(f"    {name:38s} {model * 1000:6.0f} / {t[key] * 1000:6.0f} ms, ratio {model / t[key]:.2f}")
    print(f"step efficiency: 2D {ratios[2]:.2f}, 3D {ratios[3]:.2f}")


if __name__ == "__main__":
    main()
