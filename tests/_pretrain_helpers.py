"""Helpers shared by the pretraining tests: tiny configs and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import yaml

from medcl.cli import main

TINY = {
    "encoder": {"arch": "resnet10", "widths": [4, 8, 8, 16]},
    "projection": {"hidden": 16, "dim": 8},
    "epochs": 2,
    "batch_size": 4,
    "num_workers": 0,
    "log_every_n_steps": 1,
    "progress_bar": False,
    "accelerator": "cpu",
    "optimizer": {"name": "adamw", "lr": 1e-3, "warmup_epochs": 0.5},
}


def write_config(folder: Path, manifest: Path, **changes: object) -> Path:
    """A tiny CPU config for ``manifest`` (16^3 / 32^2 images, widths [4, 8, 8, 16])."""
    data = {"manifest": str(manifest), **TINY, **changes}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_compare_config(folder: Path, manifest: Path) -> Path:
    """A tiny base config for ``medcl compare`` (DU, 1 epoch, batch 8) at ``folder/base.yaml``."""
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump({
        "manifest": str(manifest), "method": "du",
        "encoder": {"arch": "resnet10", "widths": [4, 4, 8, 8]}, "projection": {"hidden": 16, "dim": 8},
        "epochs": 1, "batch_size": 8, "num_workers": 0, "log_every_n_steps": 1, "accelerator": "cpu",
        "optimizer": {"name": "adamw", "lr": 1e-3, "warmup_epochs": 0},
    }))
    return path


def cli(args: list[str]) -> int:
    """``medcl.cli.main(args)`` as an exit code (also when click ends with SystemExit)."""
    try:
        return main([str(a) for a in args])
    except SystemExit as err:
        return int(err.code or 0)
