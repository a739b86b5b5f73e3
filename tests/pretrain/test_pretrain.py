"""End-to-end pretraining through the CLI on a tiny synthetic cohort: every method, run dir contents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _pretrain_helpers import cli, write_config
from safetensors.torch import load_file

from medcl.data.cohort import Cohort
from medcl.kernels import PriorKernel
from medcl.pretrain.config import load_config
from medcl.pretrain.run_dir import RunDir

METHOD_OPTIONS = {
    "kernel_du": {"attributes": ["age", "score1"]},
    "du": {},
    "simclr": {},
    "y_aware": {"attributes": ["age"]},
    "dcl": {},
    "align_uniform": {},
    "supervised": {"label": "diagnosis"},
    "supcon": {"label": "diagnosis"},
}


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_every_method_trains_and_writes_the_run_dir(method: str, synthetic_3d_manifest: Path,
                                                     tmp_path: Path) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest, method=method, **METHOD_OPTIONS[method])
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", out]) == 0
    run = RunDir(out)

    resolved = run.config()
    assert resolved.method == method
    assert resolved.seed == 0
    assert (resolved.encoder.spatial_dims, resolved.encoder.in_channels) == (3, 1)
    split = pd.read_csv(run.split_path)
    assert list(split.columns) == ["subject_id", "patient_id", "split"]
    assert set(split["split"]) <= {"train", "val", "test"}
    versions = json.loads(run.versions_path.read_text())
    assert {"python", "torch", "monai", "lightning", "medcl", "numpy"} <= set(versions)

    metrics = run.metrics()
    steps = metrics.dropna(subset=["train/loss_step"])
    train = split["split"] == "train"
    if method in ("supervised", "supcon"):  # trains on the labelled training subjects only
        labelled = Cohort.from_manifest(synthetic_3d_manifest).label("diagnosis")
        train &= np.isfinite(labelled)
    n_train = int(train.sum())
    assert n_train >= 8
    assert list(steps["step"]) == list(range(2 * (n_train // 4)))  # 2 epochs of full batches of 4, every step
    assert np.isfinite(steps["train/loss_step"]).all()
    assert metrics["train/loss_epoch"].notna().sum() == 2
    assert ("train/centroid_norm_step" in metrics) == (method in ("kernel_du", "du"))

    ckpt = torch.load(run.last_checkpoint, weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 2 * (n_train // 4))  # saved at the end of epoch 2 (0-based 1)
    assert run.epoch_checkpoint(1).is_file() and run.epoch_checkpoint(2).is_file()

    weights = load_file(str(run.encoder_weights))
    enc_keys = {k.removeprefix("encoder.") for k in ckpt["state_dict"] if k.startswith("encoder.")}
    assert set(weights) == enc_keys
    encoder = run.load_encoder()
    assert encoder.input_spec["size"] == [16, 16, 16]
    features = encoder(torch.randn(2, 1, 16, 16, 16))
    assert features.shape == (2, 16)
    summary = run.summary()
    assert summary["method"] == method and summary["epochs"] == 2
    assert summary["train_subjects"] == n_train and summary["steps"] == 2 * (n_train // 4)
    assert run.loss_plot.read_bytes()[:4] == b"\x89PNG"
    assert any(run.tb_dir.glob("events.out.tfevents.*"))
    ids = set(split["subject_id"]) | set(split["patient_id"])
    written = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".csv")
               and p.name != "split.csv"]
    assert written and not [(p.name, i) for p in written for i in ids if i in p.read_text()]
    # training health: per-epoch columns and the summary entry other code relies on
    assert metrics["health/spread"].notna().sum() == 2 and metrics["health/effective_rank"].notna().sum() == 2
    health = summary["health"]
    assert set(health) == {"collapsed", "reason", "spread", "effective_rank", "warnings"}
    assert health["spread"] == pytest.approx(metrics["health/spread"].dropna().iloc[-1], rel=1e-5)
    assert isinstance(health["collapsed"], bool) and isinstance(health["warnings"], list)
    # loss options fixed at the start are saved: per-method temperature, y-Aware's fitted sigma
    if method in ("simclr", "dcl", "y_aware", "supcon"):
        assert resolved.loss.temperature == (0.5 if method == "supcon" else 0.1)
    if method == "supervised":  # the binary diagnosis: a 2-logit linear head on the 16 pooled features
        assert (resolved.loss.label_classes, resolved.loss.temperature) == (2, None)
        assert ckpt["state_dict"]["head.weight"].shape == (2, 16)
    if method == "y_aware":
        values, _, _ = Cohort.from_manifest(synthetic_3d_manifest).attribute_matrix(["age"])
        ages = values[(split["split"] == "train").to_numpy(), 0]
        assert resolved.loss.sigma == pytest.approx(0.25 * np.nanstd(ages, ddof=1), rel=1e-5)
    # a kernel (and its training reference) only for the methods that use the attributes, stored once
    assert (run.kernel_dict() is not None) == (method in ("kernel_du", "y_aware")) == (resolved.kernel is not None)
    assert not run.kernel_path.exists()


def test_kernel_is_fitted_on_the_training_split_only(synthetic_3d_manifest: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest, method="kernel_du", attributes=["age", "score1"],
                          epochs=1)
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", out]) == 0
    run = RunDir(out)
    saved = run.kernel_dict()
    assert saved is not None and run.config().kernel == saved

    cohort = Cohort.from_manifest(synthetic_3d_manifest)
    values, missing, _ = cohort.attribute_matrix(["age", "score1"])
    train = cohort.split() == "train"
    on_train = cohort.prior_kernel(["age", "score1"]).fit(values[train], missing[train]).to_dict()
    on_all = cohort.prior_kernel(["age", "score1"]).fit(values, missing).to_dict()
    assert saved["fitted"]["bandwidths"] == pytest.approx(on_train["fitted"]["bandwidths"])
    assert saved["fitted"]["bandwidths"] != pytest.approx(on_all["fitted"]["bandwidths"])
    kernel = PriorKernel.from_dict(saved)
    k = kernel(torch.from_numpy(values[:5]), torch.from_numpy(missing[:5]))
    assert k.shape == (5, 5)


def test_prior_warmup_trains_as_du_first_then_with_the_prior(synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    def epoch_losses(name: str, **changes: object) -> np.ndarray:
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder, synthetic_2d_manifest, epochs=2, seed=3, **changes)
        assert cli(["pretrain", "--config", config, "--out", folder / "run"]) == 0
        return RunDir(folder / "run").metrics()["train/loss_epoch"].dropna().to_numpy()

    du = epoch_losses("du", method="du")
    warm = epoch_losses("warm", method="kernel_du", attributes=["age"], prior={"warmup_epochs": 1})
    cold = epoch_losses("cold", method="kernel_du", attributes=["age"])
    assert warm[0] == pytest.approx(du[0], abs=1e-6)  # epoch 0: plain DU, same seed, same views
    assert cold[0] != pytest.approx(du[0], abs=1e-3)  # without the warm-up the prior acts at once
    assert warm[1] != pytest.approx(du[1], abs=1e-3)  # epoch 1: the prior is on


def test_2d_cohort_and_overrides(synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, synthetic_2d_manifest, method="kernel_du", attributes=["age"])
    out = tmp_path / "run"
    code = cli(["pretrain", "--config", config, "--out", out, "--set", "epochs=1",
                "--set", "optimizer.name=lars", "--set", "optimizer.lr=0.1", "--set", "encoder.arch=resnet18"])
    assert code == 0
    run = RunDir(out)
    cfg = run.config()
    assert (cfg.epochs, cfg.optimizer.name, cfg.encoder.arch, cfg.encoder.spatial_dims) == (1, "lars", "resnet18", 2)
    assert run.load_encoder()(torch.randn(2, 1, 32, 32)).shape == (2, 16)


def test_config_errors_name_the_key(synthetic_3d_manifest: Path, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest)
    assert cli(["pretrain", "--config", config, "--set", "optimizer.lrr=1", "--out", tmp_path / "r"]) == 2
    assert "optimizer.lrr" in capsys.readouterr().err
    assert cli(["pretrain", "--config", config, "--set", "method=byol", "--out", tmp_path / "r"]) == 2
    assert "method" in capsys.readouterr().err
    assert cli(["pretrain", "--config", config, "--set", "attributes=[height]", "--out", tmp_path / "r"]) == 2
    assert "height" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"manifest": "m.yaml", "epochs": 0}))
    with pytest.raises(Exception, match="epochs"):
        load_config(bad)
    # an existing run is never overwritten
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert cli(["pretrain", "--config", config, "--out", tmp_path / "busy"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_clear_message(synthetic_3d_manifest: Path, tmp_path: Path,
                                                    capsys) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest, method="du", epochs=3,
                          optimizer={"name": "sgd", "lr": 1e30, "momentum": 0.0, "weight_decay": 0.0},
                          checkpoint={"every_n_epochs": 1, "every_n_steps": 1})
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", out]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "loss is nan" in err.lower()
    run = RunDir(out)
    assert not run.encoder_weights.exists()
    ckpt = torch.load(run.last_checkpoint, weights_only=True)  # the last good one is intact
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize(("prior", "expected"), [({}, True), ({"rescale_centroids": False}, False)])
def test_rescale_centroids_reaches_the_kernel_du_loss(synthetic_2d_manifest: Path, tmp_path: Path,
                                                      prior: dict, expected: bool) -> None:
    from medcl.pretrain.loop import prepare
    from medcl.pretrain.module import PretrainModule

    config = load_config(write_config(tmp_path, synthetic_2d_manifest, method="kernel_du", attributes=["age"],
                                      prior=prior))
    module = PretrainModule(prepare(config).config.model_dump(mode="json"))
    assert module.loss_fn.rescale is expected
