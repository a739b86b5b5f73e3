"""Two CPU processes (gloo, Lightning DDP) compute the loss on the global batch: every step's loss
and the final weights equal those of a single process on the same batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _pretrain_helpers import cli, write_config
from safetensors.torch import load_file

from medcl.pretrain.launcher import RUN_DIR_VARIABLE
from medcl.pretrain.run_dir import RunDir

# Per-sample normalisation only (no BatchNorm), so the forward pass does not depend on how the
# batch is split over processes; the loss then sees the same global batch either way.
DDP_SAFE = {"encoder": {"arch": "resnet10", "widths": [4, 8, 8, 16], "norm": "group"},
            "projection": {"hidden": 16, "dim": 8, "batch_norm": False}, "epochs": 2}


def _step_losses(run: Path) -> list[float]:
    metrics = RunDir(run).metrics().dropna(subset=["train/loss_step"])
    return list(metrics.sort_values("step")["train/loss_step"])


@pytest.mark.timeout(300)
def test_two_process_ddp_matches_single_process(synthetic_3d_manifest: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest, method="kernel_du", attributes=["age"], **DDP_SAFE)
    single = tmp_path / "single"
    assert cli(["pretrain", "--config", config, "--out", single]) == 0

    # no --out: Lightning's second process must write into the folder the first one chose
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_VARIABLE}
    proc = subprocess.run(
        [sys.executable, "-m", "medcl", "pretrain", "--config", str(config),
         "--set", "devices=2", "--set", "strategy=ddp", "--set", "accelerator=cpu"],
        capture_output=True, text=True, timeout=280, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1, folders  # one run directory for both processes
    run = RunDir(folders[0])
    assert run.is_finished()
    assert run.config().devices == 2
    want, got = _step_losses(single), _step_losses(run.path)
    steps = RunDir(single).summary()["steps"]
    assert len(got) == len(want) == steps >= 4  # every step of both epochs logged once
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert len(set(want)) > 1  # the loss moved: later steps compare trained weights too
    single_weights, ddp_weights = load_file(str(RunDir(single).encoder_weights)), load_file(str(run.encoder_weights))
    assert single_weights.keys() == ddp_weights.keys()
    for key, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
