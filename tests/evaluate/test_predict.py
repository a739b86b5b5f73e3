"""``medcl predict``: a saved diagnosis model on scans gives the in-memory model's (and its ONNX
export's) probabilities, the metrics JSON's AUC, and survives an unreadable scan."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from downstream_helpers import EASY_TRAINING, easy_cohort, make_run_dir
from sklearn.metrics import roc_auc_score

from medcl.cli import main
from medcl.data.cohort import Cohort
from medcl.data.datasets import ImageDataset
from medcl.evaluate.finetune import finetune_run
from medcl.evaluate.predict import predict_scans
from medcl.models.saved import load_diagnosis_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    manifest = easy_cohort(base / "cohort", subjects=60)
    run = make_run_dir(base / "run", manifest)
    finetune_run(run, manifest, "diagnosis", out=base / "model", seed=0, **{**EASY_TRAINING, "epochs": 3})
    return manifest, base / "model"


def _in_memory(model, manifest):
    cohort = Cohort.from_manifest(manifest)
    images = torch.stack([item["image"] for item in ImageDataset(cohort, cache="none")])
    with torch.inference_mode():
        return cohort, images, model(images).numpy()


def test_predict_equals_the_model_its_onnx_export_and_the_metrics_json(trained, tmp_path):
    manifest, model_dir = trained
    result = predict_scans(model_dir, tmp_path / "pred.csv", manifest=manifest, batch_size=7)
    table = pd.read_csv(tmp_path / "pred.csv", dtype={"subject_id": str})
    assert result.n_written == len(table) == 60 and not result.failed
    assert list(table.columns) == ["subject_id", "image", "p_control", "p_disease", "predicted"]
    model = load_diagnosis_model(model_dir)
    cohort, images, expected = _in_memory(model, manifest)
    assert table["subject_id"].tolist() == [str(s) for s in cohort.subject_ids]
    np.testing.assert_allclose(table[["p_control", "p_disease"]].to_numpy(), expected, atol=1e-5, rtol=0)
    threshold = model.metadata["diagnosis"]["threshold"]["value"]
    assert table["predicted"].tolist() == ["disease" if p >= threshold else "control" for p in table["p_disease"]]

    metrics = json.loads((model_dir / "metrics.json").read_text())
    test = cohort.split() == "test"
    auc = roc_auc_score(cohort.label("diagnosis")[test], table["p_disease"].to_numpy()[test])
    assert auc == pytest.approx(metrics["test"]["roc_auc"]["value"], abs=1e-12)

    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    import onnxruntime as ort

    assert main(["export", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "dx.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "dx.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    np.testing.assert_allclose(onnx_out, table[["p_control", "p_disease"]].to_numpy(), atol=1e-4, rtol=0)


def test_an_unreadable_scan_is_named_and_skipped(trained, tmp_path, capsys):
    manifest, model_dir = trained
    cohort_dir = tmp_path / "cohort"
    shutil.copytree(manifest.parent, cohort_dir)
    broken = sorted((cohort_dir / "images").iterdir())[4]
    broken.write_bytes(b"not a png")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model_dir), "--manifest", str(cohort_dir / "manifest.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {broken}" in err and "1 scan(s) could not be read" in err and "Traceback" not in err
    table = pd.read_csv(out, dtype={"subject_id": str})
    assert len(table) == 59 and str(broken) not in table["image"].tolist()

    images_out = tmp_path / "images.csv"  # a folder of files: no subject id column
    assert main(["predict", str(model_dir), "--images", str(cohort_dir / "images"), "--out", str(images_out)]) == 2
    table = pd.read_csv(images_out)
    assert "subject_id" not in table.columns and len(table) == 59


def test_predict_refuses_bad_input(trained, synthetic_3d_manifest, tmp_path, capsys):
    manifest, model_dir = trained
    assert main(["predict", str(model_dir), "--out", str(tmp_path / "p.csv")]) == 2
    assert "either --manifest or --images" in capsys.readouterr().err
    assert main(["predict", str(manifest.parent), "--images", str(manifest), "--out", str(tmp_path / "p.csv")]) == 2
    assert "no diagnosis model here" in capsys.readouterr().err
    assert main(["predict", str(model_dir), "-m", str(synthetic_3d_manifest), "--out", str(tmp_path / "p.csv")]) == 2
    assert "3d images, but the model was trained on 2d images" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
