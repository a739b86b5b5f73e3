"""Augmentation alone: one batch of 16 subjects x 2 views, per backend, and where the batched
backend spends its time.

- ``monai``: the per-view MONAI chain, 32 calls, one thread (as in a loader worker).
- ``batched``: :class:`medcl.data.batch_augment.BatchAugmentation` on the whole batch.
- ``kornia`` (only when importable; it is not a medcl dependency): its batched 2D pipeline with
  the closest transforms it has, and its ``RandomAffine3D`` alone against our spatial step alone
  (Kornia has no 3D random resized crop, bias field, gamma or noise).

    .venv/bin/python bench/augment.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from medcl.data.batch_augment import BatchAugmentation, _add_noise, _bias_log_field, _blur, _gamma
from medcl.data.resample import resample
from medcl.data.transforms import preset_spec, spec_transforms, view_seed

SUBJECTS, VIEWS = 16, 2


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _monai(preset: str, dims: int, images: torch.Tensor) -> Callable[[], object]:
    chain = spec_transforms(preset_spec(preset, dims), size=list(images.shape[2:]))

    def run() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i in range(SUBJECTS):
                for v in range(VIEWS):
                    chain.set_random_state(seed=view_seed(0, 0, i, v))
                    chain(images[i])
        finally:
            torch.set_num_threads(threads)

    return run


def _spatial(x: torch.Tensor, p) -> torch.Tensor:
    return resample(resample(x, p.matrix, p.offset), p.crop_matrix, p.crop_shift)


def _profile(aug: BatchAugmentation, images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of each batched step on the full batch (each on the views that drew it)."""
    index = torch.arange(SUBJECTS)
    seeds = [view_seed(0, 0, i, v) for i in range(SUBJECTS) for v in range(VIEWS)]
    p = aug.draw(seeds, list(images.shape[2:]))
    x = images.repeat_interleave(VIEWS, dim=0)
    spec = aug.spec
    out = {"draw parameters": _median_ms(lambda: aug.draw(seeds, list(images.shape[2:])), repeats),
           "spatial: affine; crop + flip    ": _median_ms(lambda: _spatial(x, p), repeats)}
    steps = {"bias field": (spec.bias_prob, p.bias_on, lambda v, s: v * torch.exp(_bias_log_field(s.bias, v, spec))
                            .unsqueeze(1)),
             "gamma": (spec.gamma_prob, p.gamma_on, lambda v, s: _gamma(v, s.gamma)),
             "noise": (spec.noise_prob, p.noise_on, lambda v, s: _add_noise(v, s.noise_std, s.noise_seed)),
             "blur": (spec.blur_prob, p.blur_on, lambda v, s: _blur(v, s.blur_sigma))}
    for name, (prob, on, fn) in steps.items():
        if prob > 0 and bool(on.any()):
            sub, sel = x[on], p.select(on)
            out[f"{name} ({int(on.sum())} views)"] = _median_ms(lambda fn=fn, sub=sub, sel=sel: fn(sub, sel), repeats)
    out["whole batch (BatchAugmentation call)"] = _median_ms(lambda: aug(images, index, 0, VIEWS), repeats)
    return out


def _kornia(dims: int, images: torch.Tensor) -> dict[str, Callable[[], object]]:
    try:
        import kornia.augmentation as K
    except ImportError:
        return {}
    x = images.repeat_interleave(VIEWS, dim=0)
    n = images.shape[-1]
    if dims == 2:
        pipe = K.AugmentationSequential(
            K.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1), p=0.9),
            K.RandomResizedCrop((n, n), scale=(0.49, 1.0), ratio=(0.7, 1.43), p=1.0),
            K.RandomGamma(gamma=(1 / 1.4, 1.4), p=0.5),
            K.RandomGaussianNoise(std=0.1, p=0.5),
            K.RandomGaussianBlur((9, 9), sigma=(0.25, 1.0), p=0.2),
        )
        return {"kornia 2D pipeline (affine, resized crop, gamma, noise, blur)": lambda: pipe(x)}
    affine = K.RandomAffine3D(degrees=10, translate=(0.06, 0.06, 0.06), scale=((0.9, 1.1),) * 3, p=0.9)
    return {"kornia RandomAffine3D alone": lambda: affine(x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the profile and Kornia (BatchAugmentation itself uses one on the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {SUBJECTS} subjects x {VIEWS} views")
    for preset, dims, size in (("mri3d", 3, 32), ("ct3d", 3, 32), ("xray2d", 2, 64)):
        images = torch.randn(SUBJECTS, 1, *[size] * dims)
        aug = BatchAugmentation(preset_spec(preset, dims), seed=0)
        monai_ms = _median_ms(_monai(preset, dims, images), max(1, args.repeats // 2))
        prof = _profile(aug, images, args.repeats)
        whole = prof["whole batch (BatchAugmentation call)"]
        print(f"{preset} {size}^{dims}: monai per view {monai_ms:7.1f} ms/batch (1 thread) | batched "
              f"{whole:7.1f} ms/batch ({monai_ms / whole:.1f}x)")
        for name, ms in prof.items():
            print(f"    {name:42s} {ms:7.1f} ms")
        if preset != "ct3d":
            x = images.repeat_interleave(VIEWS, dim=0)
            for name, fn in _kornia(dims, images).items():
                print(f"    {name:42s} {_median_ms(fn, args.repeats):7.1f} ms")
            if dims == 3:
                p = aug.draw([view_seed(0, 0, i, v) for i in range(SUBJECTS) for v in range(VIEWS)], [size] * 3)
                ours = _median_ms(lambda x=x, p=p: _spatial(x, p), args.repeats)
                print(f"    {'medcl spatial step alone (same batch)':42s} {ours:7.1f} ms")


if __name__ == "__main__":
    main()
