"""A diagnosis model through the encoder export code: every format reloads in a fresh process and
gives the saved model's probabilities, with the label mapping and threshold in its metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from downstream_helpers import tiny_encoder

from medcl.errors import MedclInputError
from medcl.export import FORMATS, export_diagnosis_model, load_encoder
from medcl.models.heads import DiagnosisModel
from medcl.models.saved import diagnosis_document, load_diagnosis_model, save_diagnosis_model

INPUT = {"channels": 1, "spatial_dims": 3, "size": [16, 16, 16], "spacing": None, "intensity": {"method": "zscore"}}
DIAGNOSIS = {
    "label": {"name": "diagnosis", "kind": "binary", "classes": ["control", "disease"], "positive": "disease",
              "units": None},
    "outputs": ["p_control", "p_disease"],
    "threshold": {"value": 0.37, "rule": "youden_j", "chosen_on": "val"},
    "preprocessing": {"image": {"kind": "3d", "channels": 1}, "preprocessing": {"size": [16, 16, 16]}},
    "provenance": {"run": "r", "method": "du"},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(3)
    model = DiagnosisModel(tiny_encoder(3), "binary").eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)  # spread probabilities away from 0.5
    folder = tmp_path_factory.mktemp("dx") / "model"
    folder.mkdir()
    save_diagnosis_model(model, diagnosis_document(model, INPUT, DIAGNOSIS), folder)
    return folder


def test_every_format_reloads_in_a_fresh_process_and_equals_the_saved_model(model_dir, tmp_path):
    paths = {fmt: str(export_diagnosis_model(model_dir, fmt, tmp_path / f"dx_{fmt}")) for fmt in FORMATS}
    code = (
        "import json, sys, torch, medcl\n"
        "x = torch.randn((3, 1, 16, 16, 16), generator=torch.Generator().manual_seed(7))\n"
        "out = {}\n"
        "for fmt, path in json.loads(sys.argv[1]).items():\n"
        "    m = medcl.load_encoder(path)\n"
        "    d = m.metadata['diagnosis']\n"
        "    out[fmt] = {'y': m(x).tolist(), 'outputs': d['outputs'], 'threshold': d['threshold']['value']}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True,
                          check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    x = torch.randn((3, 1, 16, 16, 16), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = load_diagnosis_model(model_dir)(x).numpy()
    assert expected[:, 1].std() > 0.01  # the comparison is not between constants
    for fmt in FORMATS:
        np.testing.assert_allclose(np.array(got[fmt]["y"]), expected, atol=1e-4, rtol=0, err_msg=fmt)
        assert got[fmt]["outputs"] == ["p_control", "p_disease"] and got[fmt]["threshold"] == 0.37


def test_bundle_inference_config_rebuilds_the_diagnosis_model(model_dir, tmp_path):
    from monai.bundle import ConfigParser

    bundle = export_diagnosis_model(model_dir, "bundle", tmp_path / "bundle")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["name"] == "medcl diagnosis model"
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "p_control", "1": "p_disease"}
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network")
    parser.get_parsed_content("load_weights")
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(network.eval()(x), load_diagnosis_model(model_dir)(x), atol=1e-6)


def test_default_path_and_an_encoder_is_not_a_diagnosis_model(model_dir, tmp_path):
    path = export_diagnosis_model(model_dir, "safetensors")
    assert path == model_dir / "export" / "model.safetensors"
    assert load_encoder(model_dir).metadata["format"] == "medcl-diagnosis-model"
    from medcl.export import export_module

    encoder_file = export_module(tiny_encoder(3), INPUT, "safetensors", tmp_path / "enc.safetensors")
    with pytest.raises(MedclInputError, match="not a diagnosis model"):
        load_diagnosis_model(encoder_file)
