"""Training-step time of the encoder in PyTorch's default layout against channels-last.

``encoder.channels_last`` (default true) keeps the convolution weights and inputs channels-last,
which oneDNN's CPU convolutions run faster; the values are the same (tests/models). One step here
is the encoder's forward and backward on a batch of two views, for the demo's 2D recipe (resnet10
and resnet18, [8,16,32,64], stride 1, 32^2, 64 images) and the 3D bench setting (resnet18, stride 2,
32^3, 32 images), median over ``--steps`` after two warm-up steps. Prints one line per network and
``channels-last speed-up: <ratio>`` for each; measure on an idle machine, one thread by default
(what the tests and bench runs use), and again under ``ATEN_CPU_CAPABILITY=default``.

    .venv/bin/python bench/layout.py [--threads 1] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medcl.models import EncoderSpec, build_encoder

CASES = (  # name, arch, dims, first_stride, batch
    ("2D resnet10 (demo)", "resnet10", 2, 1, 64),
    ("2D resnet18", "resnet18", 2, 1, 64),
    ("3D resnet18 stride 2", "resnet18", 3, 2, 32),
)


def step_seconds(arch: str, dims: int, stride: int, batch: int, channels_last: bool, steps: int) -> float:
    """Median seconds of one forward + backward of a fresh encoder on random 32^dims images."""
    spec = EncoderSpec(arch=arch, spatial_dims=dims, in_channels=1, widths=[8, 16, 32, 64], first_stride=stride,
                       max_pool=False, channels_last=channels_last)
    torch.manual_seed(0)
    encoder = build_encoder(spec)
    x = torch.randn(batch, 1, *[32] * dims)
    times = []
    for n in range(steps + 2):
        start = time.perf_counter()
        encoder(x).pow(2).mean().backward()
        if n >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, arch, dims, stride, batch in CASES:
        default = step_seconds(arch, dims, stride, batch, False, args.steps)
        fast = step_seconds(arch, dims, stride, batch, True, args.steps)
        print(f"{name}: default layout {default * 1e3:.1f} ms, channels-last {fast * 1e3:.1f} ms a step; "
              f"channels-last speed-up: {default / fast:.2f}")


if __name__ == "__main__":
    main()
