"""End-to-end fine-tuning of a (tiny) encoder with a linear head on a tiny synthetic cohort."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from downstream_helpers import make_run_dir

from medcl.cli import main
from medcl.errors import MedclInputError
from medcl.evaluate.finetune import finetune_run


@pytest.fixture(scope="module")
def run_dir(synthetic_3d_manifest, tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("finetune") / "run", synthetic_3d_manifest)


def test_finetune_binary_writes_test_metrics(run_dir, synthetic_3d_manifest):
    result = finetune_run(run_dir, synthetic_3d_manifest, "diagnosis", epochs=2, batch_size=8, accelerator="cpu")
    saved = json.loads((run_dir / "finetune" / "diagnosis.json").read_text())
    assert saved["test"].keys() == {"roc_auc", "balanced_accuracy", "accuracy"}
    assert 0.0 <= saved["test"]["accuracy"] <= 1.0
    assert saved["n_train"] + saved["n_val"] + saved["n_test"] == 24
    assert saved["epochs_run"] in (1, 2) and len(saved["val_loss_history"]) == saved["epochs_run"]
    assert saved["best_epoch"] == int(np.argmin(saved["val_loss_history"])) + 1
    assert result["path"].endswith("diagnosis.json")


def test_finetune_continuous_leaves_the_run_encoder_untouched(run_dir, synthetic_3d_manifest):
    import torch

    from medcl.export import load_encoder

    before = {k: v.clone() for k, v in load_encoder(run_dir).state_dict().items()}
    result = finetune_run(
        run_dir, synthetic_3d_manifest, "age", epochs=2, lr=1e-2, batch_size=8, accelerator="cpu", write=False
    )
    assert result["kind"] == "continuous" and set(result["test"]) == {"mae", "r2"}
    assert result["test"]["mae"] > 0
    after = load_encoder(run_dir).state_dict()  # the run's own encoder file is never modified
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_finetune(run_dir, synthetic_3d_manifest, capsys):
    args = ["finetune", str(run_dir), "--manifest", str(synthetic_3d_manifest), "--label", "diagnosis"]
    assert main([*args, "--epochs", "1", "--accelerator", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test roc_auc" in out and "finetune/diagnosis.json" in out


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
