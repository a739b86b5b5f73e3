"""Fine-tuning diagnosis models end to end on tiny synthetic cohorts: it learns, saves, refuses bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from downstream_helpers import EASY_TRAINING, easy_cohort, make_run_dir, with_split_column

from medcl.cli import main
from medcl.data.cohort import Cohort
from medcl.errors import MedclInputError
from medcl.evaluate.finetune import finetune_run
from medcl.models.saved import load_diagnosis_model


@pytest.fixture(scope="module")
def run_dir(synthetic_3d_manifest, tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("finetune") / "run", synthetic_3d_manifest)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    base = tmp_path_factory.mktemp("easy")
    manifest = easy_cohort(base / "cohort")
    return manifest, make_run_dir(base / "run", manifest)


def test_finetune_learns_an_easy_label_and_saves_the_model(easy, tmp_path):
    """Test AUC above 0.85 on a cohort where the lesion is plain to see.

    Measured with EASY_TRAINING (full fine-tuning of a random tiny ResNet-10, 10 epochs of at least
    10 steps), 120 scans, 24 test scans, seeds 0-7, one thread: 1.0, 1.0, 1.0, .981, .991, 1.0, .972,
    1.0 (min .972); the same with ATEN_CPU_CAPABILITY=default: 1.0, 1.0, .991, .944, .991, 1.0, .981,
    1.0 (min .944). Seed 0 here.
    """
    manifest, run = easy
    result = finetune_run(run, manifest, "diagnosis", out=tmp_path / "model", seed=0, **EASY_TRAINING)
    assert result["test"]["roc_auc"]["value"] > 0.85
    assert result["test"].keys() == {"roc_auc", "balanced_accuracy", "sensitivity", "specificity", "brier", "ece"}
    for entry in result["test"].values():
        assert entry["low"] <= entry["value"] <= entry["high"]
    model = load_diagnosis_model(tmp_path / "model")
    doc = model.metadata["diagnosis"]
    assert doc["label"] == {"name": "diagnosis", "kind": "binary", "classes": ["control", "disease"],
                            "positive": "disease", "units": None}
    assert doc["outputs"] == ["p_control", "p_disease"]
    assert doc["threshold"]["value"] == result["threshold"]["value"] and doc["threshold"]["chosen_on"] == "val"
    assert doc["provenance"] == {"run": "run", "init": "scratch", "mode": "full", "method": "kernel_du",
                                 "attributes": ["age", "sex"], "kernel_terms": [{"name": "age", "kind": "rbf"}],
                                 "pretraining_epochs": 1}
    assert doc["preprocessing"]["preprocessing"]["size"] == [32, 32]
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["test"]["roc_auc"] == result["test"]["roc_auc"]
    text = (tmp_path / "model" / "model.json").read_text() + (tmp_path / "model" / "metrics.json").read_text()
    ids = Cohort.from_manifest(manifest).subject_ids
    assert not any(i in text for i in ids) and "p0000" not in text  # no subject or patient id
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["metrics.json", "model.json",
                                                                      "model.safetensors"]


def test_threshold_is_chosen_on_validation_only(easy, tmp_path):
    manifest, run = easy
    fixed = with_split_column(manifest, tmp_path / "fixed")
    flipped = with_split_column(manifest, tmp_path / "flipped")
    table = pd.read_csv(flipped.parent / "participants.csv")
    test = table["split"] == "test"
    table.loc[test, "diagnosis"] = table.loc[test, "diagnosis"].map({"disease": "control", "control": "disease"})
    table.to_csv(flipped.parent / "participants.csv", index=False)
    settings = {**EASY_TRAINING, "epochs": 3, "n_boot": 20, "write": False}
    a = finetune_run(run, fixed, "diagnosis", **settings)
    b = finetune_run(run, flipped, "diagnosis", **settings)
    assert a["threshold"] == b["threshold"] and a["val"] == b["val"]  # test labels changed nothing of it
    assert b["test"]["roc_auc"]["value"] == pytest.approx(1 - a["test"]["roc_auc"]["value"])


def test_train_size_and_multiclass(easy, tmp_path):
    manifest, run = easy
    doc = yaml.safe_load(manifest.read_text())
    doc["labels"].append({"name": "site", "type": "multiclass"})
    shutil.copytree(manifest.parent, tmp_path / "cohort")
    (tmp_path / "cohort" / "manifest.yaml").write_text(yaml.safe_dump(doc))
    result = finetune_run(run, tmp_path / "cohort" / "manifest.yaml", "site", mode="linear", epochs=2,
                          train_size="25%", device="cpu", n_boot=20, out=tmp_path / "site")
    assert result["kind"] == "multiclass" and result["threshold"] is None
    assert result["sizes"]["train_patients"] == int(np.ceil(0.25 * result["sizes"]["train_patients_available"]))
    assert set(result["test"]) == {"roc_auc", "balanced_accuracy", "brier", "ece"}
    model = load_diagnosis_model(tmp_path / "site")
    assert model.metadata["diagnosis"]["outputs"] == ["p_siteA", "p_siteB", "p_siteC"]
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(model(x).sum(dim=1), torch.ones(3), atol=1e-6)


def test_finetune_continuous_3d_leaves_the_run_encoder_untouched(run_dir, synthetic_3d_manifest):
    from medcl.export import load_encoder

    before = {k: v.clone() for k, v in load_encoder(run_dir).state_dict().items()}
    result = finetune_run(run_dir, synthetic_3d_manifest, "age", epochs=2, lr=1e-2, batch_size=8,
                          accelerator="cpu", write=False, n_boot=20)
    assert result["kind"] == "continuous" and set(result["test"]) == {"mae", "r2"}
    assert result["test"]["mae"]["value"] > 0 and result["path"] is None
    after = load_encoder(run_dir).state_dict()  # the run's own encoder file is never modified
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_finetune_and_report(run_dir, synthetic_3d_manifest, tmp_path, capsys):
    out = tmp_path / "dx"
    args = ["finetune", str(run_dir), "--manifest", str(synthetic_3d_manifest), "--label", "diagnosis",
            "--out", str(out), "--epochs", "1", "--bootstrap", "20", "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "roc_auc" in text and "decision threshold (val, Youden J)" in text and f"model: {out}" in text
    model = load_diagnosis_model(out)
    assert model.metadata["diagnosis"]["settings"]["mode"] == "lp-ft"
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Test metrics" in page and "reliability diagram" in page
    assert not any(i in page for i in Cohort.from_manifest(synthetic_3d_manifest).subject_ids)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    assert main([*args[:7], str(tmp_path / "mine"), *args[8:]]) == 2  # not a model folder: refused
    assert "not a medcl diagnosis model folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user data"
    assert main([*args, "--mode", "fast"]) == 2


def test_finetune_needs_a_test_split(run_dir, synthetic_3d_manifest, tmp_path, capsys):
    cohort_dir = tmp_path / "cohort"
    shutil.copytree(synthetic_3d_manifest.parent, cohort_dir)
    manifest = yaml.safe_load((cohort_dir / "manifest.yaml").read_text())
    manifest["split"]["test_folds"] = []
    (cohort_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(MedclInputError, match="test split"):
        finetune_run(run_dir, cohort_dir / "manifest.yaml", "diagnosis", epochs=1)
    args = ["finetune", str(run_dir), "--manifest", str(cohort_dir / "manifest.yaml"), "--label", "nope"]
    assert main(args) == 2
    assert "no label 'nope'" in capsys.readouterr().err


def test_finetune_refuses_a_test_subject_from_the_pretraining_split(run_dir, synthetic_3d_manifest, tmp_path,
                                                                   capsys):
    import pandas as pd

    from medcl.data.cohort import Cohort

    leaky = tmp_path / "leaky_run"
    shutil.copytree(run_dir, leaky, ignore=shutil.ignore_patterns("finetune"))  # other tests' results
    split = pd.read_csv(leaky / "split.csv", dtype=str)
    cohort = Cohort.from_manifest(synthetic_3d_manifest)
    test_ids = [str(i) for i, s in zip(cohort.subject_ids, cohort.split(), strict=True) if s == "test"]
    assert test_ids
    split.loc[split["subject_id"] == test_ids[0], "split"] = "train"  # pretrained on a finetune test subject
    split.to_csv(leaky / "split.csv", index=False)
    args = ["finetune", str(leaky), "--manifest", str(synthetic_3d_manifest), "--label", "diagnosis",
            "--epochs", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 test subject(s)" in err and test_ids[0] in err and "pretraining split" in err
    assert "Traceback" not in err
    assert not (leaky / "finetune").exists()  # nothing half-written
