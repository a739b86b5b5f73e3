"""Two CPU processes (gloo, Lightning DDP) compute the loss on the global batch: the first-step
loss equals the single-process loss on the same batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _pretrain_helpers import cli, write_config

from medcl.train.run_dir import RunDir

# Per-sample normalisation only (no BatchNorm), so the forward pass does not depend on how the
# batch is split over processes; the loss then sees the same global batch either way.
DDP_SAFE = {"encoder": {"arch": "resnet10", "widths": [4, 8, 8, 16], "norm": "group"},
            "projection": {"hidden": 16, "dim": 8, "batch_norm": False}, "epochs": 1}


def _first_losses(run: Path) -> list[float]:
    metrics = RunDir(run).metrics().dropna(subset=["train/loss_step"])
    return list(metrics.sort_values("step")["train/loss_step"])


@pytest.mark.timeout(300)
def test_two_process_ddp_matches_single_process(synthetic_3d_manifest: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest, method="kernel_du", attributes=["age"], **DDP_SAFE)
    single = tmp_path / "single"
    assert cli(["pretrain", "--config", config, "--out", single]) == 0

    ddp = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "medcl", "pretrain", "--config", str(config), "--out", str(ddp),
         "--set", "devices=2", "--set", "strategy=ddp", "--set", "accelerator=cpu"],
        capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(ddp)
    assert run.is_finished()
    assert run.config().devices == 2
    want, got = _first_losses(single), _first_losses(ddp)
    assert len(got) == len(want) >= 2
    assert got[0] == pytest.approx(want[0], rel=1e-5, abs=1e-6)
