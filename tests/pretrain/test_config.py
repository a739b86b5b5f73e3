"""Config values as users write them (numbers for precision, GPU lists), `medcl config show`, device checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from _pretrain_helpers import cli, write_config

from medcl.data.manifest import load_manifest
from medcl.errors import MedclInputError
from medcl.pretrain.config import load_config, parse_config
from medcl.pretrain.launcher import check_accelerator


@pytest.mark.parametrize(("given", "resolved"), [(32, "32"), ("32", "32"), (64, "64"), ("bf16-mixed", "bf16-mixed")])
def test_precision_as_yaml_reads_it(given, resolved) -> None:
    assert parse_config({"manifest": "m", "precision": given}).precision == resolved
    assert parse_config({"manifest": "m"}, overrides=[f"precision={given}"]).precision == resolved


def test_precision_refuses_unknown_values_naming_the_key() -> None:
    with pytest.raises(MedclInputError, match="precision"):
        parse_config({"manifest": "m", "precision": 16})  # Lightning's name is "16-mixed"
    with pytest.raises(MedclInputError, match="precision"):
        parse_config({"manifest": "m", "precision": True})


@pytest.mark.parametrize(("devices", "multi"), [(1, False), (4, True), (-1, True), ([0, 1], True), ([3], False),
                                                ("auto", False)])
def test_devices_accepts_lightning_forms(devices, multi) -> None:
    config = parse_config({"manifest": "m", "devices": devices})
    assert config.devices == devices and config.multi_device is multi


@pytest.mark.parametrize("devices", [0, -2, [], [0, 0], [-1]])
def test_devices_refuses_nonsense(devices) -> None:
    with pytest.raises(MedclInputError, match="devices"):
        parse_config({"manifest": "m", "devices": devices})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize(("accelerator", "devices", "names"), [
    ("gpu", 1, ["accelerator", "accelerator=cpu", "precision=32"]),
    ("cuda", 4, ["accelerator", "accelerator=cpu"]),
    ("auto", [0, 1], ["devices", "devices=1"]),
    ("cpu", [0], ["devices"]),
])
def test_device_settings_this_machine_cannot_run_are_input_errors(accelerator, devices, names) -> None:
    with pytest.raises(MedclInputError) as err:
        check_accelerator(accelerator, devices)
    assert all(n in str(err.value) for n in names)


@pytest.mark.parametrize(("accelerator", "devices"), [("cpu", 1), ("auto", 1), ("auto", 2), ("cpu", "auto")])
def test_cpu_device_settings_pass(accelerator, devices) -> None:
    if not torch.cuda.is_available():
        check_accelerator(accelerator, devices)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU template on a machine without a GPU")
def test_gpu_template_on_a_cpu_machine_exits_2_naming_accelerator(synthetic_3d_manifest: Path, tmp_path: Path,
                                                                   capsys) -> None:
    root = Path(__file__).resolve().parents[2]
    code = cli(["pretrain", "--config", root / "pipelines" / "brain_mri_template.yaml",
                "--set", f"manifest={synthetic_3d_manifest}", "--out", tmp_path / "run"])
    err = capsys.readouterr().err
    assert code == 2 and "accelerator" in err and "--set accelerator=cpu" in err and "internal error" not in err
    assert not (tmp_path / "run").exists()


def test_config_show_prints_the_resolved_config_with_every_default(synthetic_3d_manifest: Path, tmp_path: Path,
                                                                   capsys) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest, attributes=["age"])
    assert cli(["config", "show", "--config", config, "--set", "optimizer.lr=0.01", "--set", "precision=32",
                "--set", "devices=[0, 1]"]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert shown["optimizer"] == {"name": "adamw", "lr": 0.01, "weight_decay": 0.0001, "momentum": 0.9,
                                  "trust_coefficient": 0.001, "warmup_epochs": 0.5}
    assert (shown["precision"], shown["devices"], shown["attributes"]) == ("32", [0, 1], ["age"])
    assert shown["loss"]["t"] == 2.0 and shown["prior"]["instance_weight"] == 0.03  # defaults filled
    assert shown["manifest"] == str(synthetic_3d_manifest)
    # what it prints is the config a run would get: it parses back to the same values
    overrides = ["optimizer.lr=0.01", "precision=32", "devices=[0, 1]"]
    assert parse_config(shown).model_dump() == load_config(config, overrides).model_dump()


def test_config_show_names_the_bad_key_and_names_missing_from_the_manifest(synthetic_3d_manifest: Path,
                                                                           tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, synthetic_3d_manifest)
    assert cli(["config", "show", "--config", config, "--set", "encoder.depth=3"]) == 2
    captured = capsys.readouterr()
    assert "encoder.depth" in captured.err and captured.out == ""
    assert cli(["config", "show", "--config", config, "--set", "attributes=[age, height]",
                "--set", "probe.every_n_epochs=1", "--set", "probe.label=grade"]) == 2
    err = capsys.readouterr().err
    assert "'height' is not a manifest attribute" in err and "probe.label: 'grade'" in err


def test_manifest_problems_lists_unknown_names_only(synthetic_3d_manifest: Path) -> None:
    manifest = load_manifest(synthetic_3d_manifest)
    ok = parse_config({"manifest": "m", "attributes": ["age", "sex"], "method": "supervised", "label": "diagnosis"})
    assert ok.manifest_problems(manifest) == []
    bad = parse_config({"manifest": "m", "attributes": ["age", "bmi"], "method": "supervised", "label": "grade"})
    problems = bad.manifest_problems(manifest)
    assert len(problems) == 2 and "'bmi'" in problems[0] and problems[1].startswith("label: 'grade'")


def test_pretrain_help_shows_the_default_run_dir(capsys) -> None:
    # rich markup once ate "<name>" and printed "default runs/;"
    assert cli(["pretrain", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "runs/CONFIG-METHOD-TIME" in out and "runs/;" not in out
