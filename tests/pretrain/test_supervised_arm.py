"""The supervised upper bound as a pretraining run: cross-entropy / regression through a linear head."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _pretrain_helpers import cli, write_config
from safetensors.torch import load_file

from medcl.data.cohort import Cohort
from medcl.pretrain.config import upgrade_saved_config
from medcl.pretrain.run_dir import RunDir


def _pretrained(folder: Path, manifest: Path, **changes: object) -> RunDir:
    out = folder / "run"
    assert cli(["pretrain", "--config", write_config(folder, manifest, **changes), "--out", out]) == 0
    return RunDir(out)


@pytest.mark.parametrize("dims", [2, 3])
def test_the_cross_entropy_arm_learns_and_exports_the_encoder_without_its_head(
        dims: int, synthetic_2d_manifest: Path, synthetic_3d_manifest: Path, tmp_path: Path) -> None:
    manifest = synthetic_2d_manifest if dims == 2 else synthetic_3d_manifest
    # near-identity views (strength 0): the labelled training subjects are fitted within a few dozen steps
    run = _pretrained(tmp_path, manifest, method="supervised", label="diagnosis", epochs=16,
                      optimizer={"name": "adamw", "lr": 3e-3}, augmentation={"strength": 0.0})
    losses = run.metrics()["train/loss_epoch"].dropna().to_numpy()
    # the last epochs over the first: measured 0.37-0.5 (2D, 3D, ATEN_CPU_CAPABILITY=default)
    assert len(losses) == 16 and losses[-4:].mean() < 0.85 * losses[0]
    assert losses[0] < math.log(2) + 0.5  # starts near the uniform prediction's log 2
    summary = run.summary()
    assert not summary["health"]["collapsed"]
    # the head belongs to the training module only: the exported encoder keeps its format
    ckpt = torch.load(run.last_checkpoint, weights_only=True)
    assert ckpt["state_dict"]["head.weight"].shape == (2, 16) and "head.bias" in ckpt["state_dict"]
    weights = load_file(str(run.encoder_weights))
    assert not [k for k in weights if k.startswith("head")]
    assert set(weights) == {k.removeprefix("encoder.") for k in ckpt["state_dict"] if k.startswith("encoder.")}
    exported = tmp_path / "encoder.safetensors"
    assert cli(["export", str(run.path), "--format", "safetensors", "--out", str(exported)]) == 0
    assert set(load_file(str(exported))) == set(weights)


def test_a_continuous_label_is_regressed_on_its_standardised_value(synthetic_3d_manifest: Path,
                                                                    tmp_path: Path) -> None:
    run = _pretrained(tmp_path, synthetic_3d_manifest, method="supervised", label="age", epochs=1)
    loss = run.config().loss
    split = np.loadtxt(run.split_path, delimiter=",", skiprows=1, dtype=str)[:, 2]
    age = Cohort.from_manifest(synthetic_3d_manifest).label("age")[split == "train"]
    assert loss.label_classes is None
    assert loss.label_mean == pytest.approx(np.nanmean(age)) and loss.label_std == pytest.approx(np.nanstd(age))
    ckpt = torch.load(run.last_checkpoint, weights_only=True)
    assert ckpt["state_dict"]["head.weight"].shape == (1, 16)  # one standardised prediction per view
    assert np.isfinite(run.metrics()["train/loss_epoch"].dropna()).all()


def test_a_run_saved_when_supervised_meant_supcon_loads_as_supcon(synthetic_3d_manifest: Path,
                                                                 tmp_path: Path) -> None:
    run = _pretrained(tmp_path, synthetic_3d_manifest, method="supcon", label="diagnosis", epochs=1)
    saved = yaml.safe_load(run.config_path.read_text())
    old = {**saved, "method": "supervised"}  # what such a run wrote: SupCon options, no label_classes
    old["loss"] = {k: v for k, v in saved["loss"].items() if not k.startswith("label_")}
    run.config_path.write_text(yaml.safe_dump(old))
    resolved = run.config()
    assert resolved.method == "supcon" and resolved.loss.supcon_instance_mix == saved["loss"]["supcon_instance_mix"]
    assert cli(["pretrain", "--resume", str(run.path), "--set", "epochs=2"]) == 0  # its checkpoint resumes as SupCon
    assert run.summary()["epochs"] == 2
    new = {**saved, "method": "supervised", "loss": {**saved["loss"], "label_classes": 2}}
    assert upgrade_saved_config(new)["method"] == "supervised"
