"""One prepared GPU check: step efficiency at 96^3, kernel DU at a global batch of 4096, the loader.

Measures, on the first CUDA device (or the CPU):

1. model-only step: 3D ResNet-18 (``medcl.models``, first stride 2) + projector + kernel DU,
   forward and backward under bf16 autocast, AdamW step, on views already on the device;
2. full step: the same, fed by the loader from the shared preprocessed cache (``cache="disk"``,
   pinned memory, workers) with the views made on the device by the batched augmentation, as in
   ``medcl pretrain``; step efficiency = model-only time / full-step time;
3. kernel DU (``medcl.losses.decoupled_uniformity``) at B = 4096, d = 128, V = 2, forward +
   backward, against the paper's plain formula (explicit inverse, n x n product, ``pdist``),
   with their absolute difference;
4. loader alone: scans/s out of the cache through ``make_loader`` (no model).

Prints a few lines and one summary line starting with ``gpu-bench``. Defaults (96^3, batch 32,
352 synthetic scans) fit in under 5 minutes on one GPU; ``--tiny`` shrinks everything for a CPU
(tests/bench/test_gpu_bench.py runs it so this script cannot rot).

    python bench/gpu.py [--tiny] [--size 96] [--batch 32] [--workers 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from medcl.data.datasets import MultiViewDataset, make_loader
from medcl.losses import decoupled_uniformity
from medcl.models.encoders import EncoderSpec, ProjectionHead, build_encoder


def _official_formula():
    """The paper's formula from bench/losses.py (loaded by path: bench is not a package)."""
    spec = importlib.util.spec_from_file_location("medcl_bench_losses", Path(__file__).with_name("losses.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.official


# subjects = batch x (steps + 1): the full steps run inside one loader epoch (workers start once)
FULL = {"size": 96, "batch": 32, "subjects": 352, "widths": [64, 128, 256, 512], "steps": 10,
        "loss_batch": 4096, "workers": 8}
TINY = {"size": 16, "batch": 4, "subjects": 12, "widths": [4, 8, 8, 16], "steps": 2,
        "loss_batch": 64, "workers": 0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rbf_kernel(values: torch.Tensor) -> torch.Tensor:
    d2 = (values[:, None] - values[None, :]) ** 2
    return torch.exp(-d2 / (2 * d2.median().clamp_min(1e-6)))


class Model(torch.nn.Module):
    """Encoder + projector, returning z (n, V, d) from views (n, V, C, *S)."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.encoder = build_encoder(EncoderSpec(arch="resnet18", spatial_dims=3, in_channels=1,
                                                 widths=widths, first_stride=2))
        self.head = ProjectionHead(self.encoder.out_features, hidden=4 * widths[-1], out=2 * widths[-1])

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        n, v = views.shape[:2]
        return self.head(self.encoder(views.flatten(0, 1))).view(n, v, -1)


def _train_step(model: Model, opt: torch.optim.Optimizer, views: torch.Tensor, kernel: torch.Tensor) -> None:
    with torch.autocast(views.device.type, dtype=torch.bfloat16):
        z = model(views)
    loss = decoupled_uniformity(z.float(), kernel)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def model_only(model: Model, opt: torch.optim.Optimizer, s: dict, device: torch.device) -> float:
    """Seconds per step on views already on the device."""
    views = torch.randn(s["batch"], 2, 1, *[s["size"]] * 3, device=device)
    kernel = _rbf_kernel(torch.rand(s["batch"], device=device))
    _train_step(model, opt, views, kernel)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        _train_step(model, opt, views, kernel)
    _sync(device)
    return (time.perf_counter() - t0) / s["steps"]


def full_steps(model: Model, opt: torch.optim.Optimizer, data: MultiViewDataset, s: dict,
               device: torch.device) -> float:
    """Seconds per step from the cache through the loader, views made on the device."""
    augment = data.batch_augmentation
    loader = make_loader(data, s["batch"], num_workers=s["workers"], drop_last=True,
                         pin_memory=device.type == "cuda")
    steps, t0 = 0, None
    while steps < s["steps"] + 1:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            views = augment(images, batch["index"].to(device), 0, 2)
            kernel = _rbf_kernel(batch["attributes"][:, 0].to(device))
            _train_step(model, opt, views, kernel)
            steps += 1
            if steps == 1:  # after the warm-up step (workers started, kernels chosen)
                _sync(device)
                t0 = time.perf_counter()
            if steps == s["steps"] + 1:
                break
    _sync(device)
    return (time.perf_counter() - t0) / s["steps"]


def loader_rate(data: MultiViewDataset, s: dict, device: torch.device) -> float:
    """Scans/s out of the cache through the loader (one warm pass first)."""
    loader = make_loader(data, s["batch"], num_workers=s["workers"], pin_memory=device.type == "cuda")
    for _ in loader:
        pass
    t0 = time.perf_counter()
    n = sum(len(b["index"]) for b in loader)
    return n / (time.perf_counter() - t0)


def loss_times(s: dict, device: torch.device) -> tuple[float, float, float]:
    """(medcl seconds, plain seconds, |difference|) of kernel DU forward + backward at ``loss_batch``."""
    n = s["loss_batch"]
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, 2, 128, generator=gen).to(device)
    kernel = _rbf_kernel(torch.rand(n, generator=gen).to(device))
    official = _official_formula()
    times, values = [], []
    for fn in (lambda z: decoupled_uniformity(z, kernel), lambda z: official(z, kernel)):
        best = float("inf")
        for _ in range(3):
            z = z0.clone().requires_grad_(True)
            _sync(device)
            t0 = time.perf_counter()
            value = fn(z)
            value.backward()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        times.append(best)
        values.append(float(value.detach()))
    return times[0], times[1], abs(values[0] - values[1])


def _cohort(folder: Path, s: dict) -> Path:
    """Synthetic scans written at up to 32^3 (writing 96^3 ones costs seconds each) and padded to
    ``size`` by the preprocessing: the cache then holds full-size tensors, which is what is timed."""
    import yaml

    from medcl.data.synthetic import generate_cohort

    manifest = generate_cohort(folder, dims=3, subjects=s["subjects"], size=min(32, s["size"]), seed=0)
    spec = yaml.safe_load(manifest.read_text())
    spec["preprocessing"]["size"] = [s["size"]] * 3
    manifest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return manifest


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke run)")
    for key in ("size", "batch", "subjects", "steps", "loss_batch", "workers"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="cohort and cache folder (default: temporary)")
    args = parser.parse_args(argv)
    s = dict(TINY if args.tiny else FULL)
    s.update({k: v for k, v in vars(args).items() if k in s and v is not None})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True

    from medcl.data.cohort import Cohort
    from medcl.data.preprocessed import warm_cache

    with tempfile.TemporaryDirectory(prefix="medcl-gpu-") as tmp:
        root = args.out or Path(tmp)
        manifest = root / "cohort" / "manifest.yaml"
        if not manifest.is_file():
            _cohort(root / "cohort", s)
        warmed = warm_cache(Cohort.from_manifest(manifest), cache_dir=root / "cache",
                            workers=s["workers"], progress=False)
        print(warmed.line())
        data = MultiViewDataset(manifest, cache="disk", cache_dir=root / "cache", backend="batched",
                                attribute_names=["age"])
        model = Model(s["widths"]).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        t_model = model_only(model, opt, s, device)
        t_full = full_steps(model, opt, data, s, device)
        reads = loader_rate(data, s, device)
    t_du, t_plain, diff = loss_times(s, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    images = 2 * s["batch"]
    print(f"model-only step {1000 * t_model:.0f} ms ({images / t_model:.0f} views/s), full step "
          f"{1000 * t_full:.0f} ms ({images / t_full:.0f} views/s)")
    print(f"kernel DU at B={s['loss_batch']}: medcl {1000 * t_du:.1f} ms, plain formula {1000 * t_plain:.1f} ms "
          f"(forward + backward), |difference| {diff:.2e}")
    line = (f"gpu-bench {name} size={s['size']} batch={s['batch']} bf16: step efficiency {t_model / t_full:.2f} "
            f"(model {images / t_model:.0f}, full {images / t_full:.0f} views/s); kernel DU B={s['loss_batch']} "
            f"{1000 * t_du:.1f} ms vs plain {1000 * t_plain:.1f} ms ({t_plain / t_du:.1f}x); "
            f"loader {reads:.0f} scans/s ({s['workers']} workers) vs model {s['batch'] / t_model:.0f} scans/s")
    print(line)
    return line


if __name__ == "__main__":
    main()
