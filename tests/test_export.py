"""Export -> load round trips for every format, bundle compliance, privacy and bad files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from downstream_helpers import make_run_dir, tiny_encoder

from medcl.cli import main
from medcl.errors import MedclInputError
from medcl.export import (
    FORMATS,
    ExportCheckError,
    bundle_inference_config,
    check_bundle_metadata,
    export_module,
    load_encoder,
)

INPUT_3D = {
    "channels": 1,
    "spatial_dims": 3,
    "size": [16, 16, 16],
    "spacing": [2.0, 2.0, 2.0],
    "orientation": "RAS",
    "intensity": {"method": "zscore", "nonzero": True},
}
SUFFIX = {
    "bundle": "", "safetensors": ".safetensors", "torch-export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"
}


def _target(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / f"encoder_{fmt.replace('-', '_')}{SUFFIX[fmt]}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_gives_the_same_features(tmp_path, fmt):
    encoder = tiny_encoder()
    out = export_module(encoder, INPUT_3D, fmt, _target(tmp_path, fmt))
    loaded = load_encoder(out)
    x = torch.randn(3, 1, 16, 16, 16)  # another batch size than the export's probe input
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x), atol=1e-4, rtol=0)
    assert loaded.input_spec["size"] == [16, 16, 16]
    assert loaded.input_spec["intensity"]["method"] == "zscore"
    assert loaded.out_features == encoder.out_features == 8
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript"])
def test_round_trip_2d(tmp_path, fmt):
    encoder = tiny_encoder(spatial_dims=2, in_channels=3)
    spec = {"channels": 3, "spatial_dims": 2, "size": [32, 32], "intensity": {"method": "minmax"}}
    loaded = load_encoder(export_module(encoder, spec, fmt, _target(tmp_path, fmt)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x), atol=1e-4, rtol=0)


def test_three_line_diagnosis_model(tmp_path):
    export_module(tiny_encoder(), INPUT_3D, "safetensors", tmp_path / "enc.safetensors")
    import medcl

    encoder = medcl.load_encoder(tmp_path / "enc.safetensors")
    model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.out_features, 2))
    assert model(torch.randn(2, 1, *encoder.input_spec["size"])).shape == (2, 2)


def test_bundle_is_monai_compliant(tmp_path):
    from monai.bundle import ConfigParser

    encoder = tiny_encoder()
    bundle = export_module(encoder, INPUT_3D, "bundle", tmp_path / "bundle")
    files = ("configs/metadata.json", "configs/inference.json", "models/model.safetensors", "docs/README.md")
    for rel in files:
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert check_bundle_metadata(meta) == []
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 8
    # MONAI's ConfigParser builds the network, loads the weights and the preprocessing
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network")
    parser.get_parsed_content("load_weights")
    preprocessing = parser.get_parsed_content("preprocessing")
    assert type(preprocessing).__name__ == "Compose"
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network.eval()(x), encoder(x), atol=1e-5, rtol=0)
    # the MONAI-style state dict loads without unpickling arbitrary objects
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(state) == set(encoder.state_dict())


def test_bundle_metadata_check_reports_missing_keys():
    problems = check_bundle_metadata({"version": "1", "network_data_format": {"inputs": {"image": {}}}})
    assert "missing key 'task'" in problems
    assert any("outputs" in p for p in problems)
    assert any("inputs.image: missing key 'spatial_shape'" in p for p in problems)


def test_inference_config_rebuilds_from_spec_only():
    doc = {"spec": {"arch": "resnet10"}, "input": INPUT_3D}
    config = bundle_inference_config(doc)
    names = [t["_target_"] for t in config["preprocessing"]["transforms"]]
    assert names[:2] == ["LoadImaged", "EnsureChannelFirstd"]
    assert {"Orientationd", "Spacingd", "NormalizeIntensityd", "ResizeWithPadOrCropd"} <= set(names)


class _Noisy(torch.nn.Module):
    """An encoder whose output is random: no exported artifact can reproduce it."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 4)
        self.out_features = 4

    def forward(self, x):
        return self.lin(x.flatten(1)[:, :16]) + torch.randn(x.shape[0], 4)


def test_failed_round_trip_check_writes_nothing(tmp_path):
    out = tmp_path / "noisy.pt"
    with pytest.raises(ExportCheckError, match="does not reproduce"):
        export_module(_Noisy(), {"channels": 1, "size": [4, 4]}, "torchscript", out)
    assert list(tmp_path.iterdir()) == []


def test_bundle_needs_an_architecture_spec(tmp_path):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    with pytest.raises(MedclInputError, match="spec"):
        export_module(module, {"channels": 1, "size": [4, 4]}, "bundle", tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_needs_overwrite(tmp_path):
    target = tmp_path / "enc.pt"
    target.write_text("keep me")
    with pytest.raises(MedclInputError, match="exists"):
        export_module(tiny_encoder(), INPUT_3D, "torchscript", target)
    assert target.read_text() == "keep me"
    export_module(tiny_encoder(), INPUT_3D, "torchscript", target, overwrite=True)
    assert load_encoder(target).out_features == 8


# -- bad files ---------------------------------------------------------------------------------


def test_corrupted_and_foreign_files_name_the_file(tmp_path):
    good = export_module(tiny_encoder(), INPUT_3D, "safetensors", tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:100])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not an onnx model" * 10)
    not_zip = tmp_path / "broken.pt2"
    not_zip.write_bytes(b"hello")
    foreign_ts = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(3, 2), torch.randn(1, 3)), str(foreign_ts))
    foreign_st = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(foreign_st))
    unknown = tmp_path / "weights.bin"
    unknown.write_bytes(b"\x80\x04K\x01.")  # a pickle
    for path in (truncated, garbage, not_zip, foreign_ts, foreign_st, unknown):
        with pytest.raises(MedclInputError) as info:
            load_encoder(path)
        assert path.name in str(info.value)
    with pytest.raises(MedclInputError, match="no such file"):
        load_encoder(tmp_path / "missing.pt2")


def test_pt2_with_pickled_payload_is_refused(tmp_path):
    good = export_module(tiny_encoder(), INPUT_3D, "torch-export", tmp_path / "good.pt2")
    bad = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(MedclInputError, match="pickled"):
        load_encoder(bad)


def test_every_torch_load_in_medcl_is_weights_only():
    root = Path(__file__).resolve().parents[1] / "medcl"
    calls = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, i = 1, match.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            calls.append((path.name, re.sub(r"\s+", "", text[match.end() : i - 1])))
    bad = [(name, args) for name, args in calls if "weights_only=True" not in args]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_import_medcl_stays_light():
    code = "import sys, medcl; assert 'torch' not in sys.modules; print(callable(medcl.load_encoder))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# -- from a run directory, through the CLI ------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(synthetic_3d_manifest, tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("export") / "run", synthetic_3d_manifest)


def test_cli_bundle_export_holds_no_ids(run_dir, synthetic_3d_manifest, tmp_path, capsys):
    from medcl.data.cohort import Cohort

    out = tmp_path / "bundle"
    assert main(["export", str(run_dir), "--format", "bundle", "--out", str(out)]) == 0
    assert "round-trip checked" in capsys.readouterr().out
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    training = meta["medcl"]["training"]
    assert training["method"] == "kernel_du"
    assert training["attributes"] == ["age", "sex"]
    assert training["cohort"]["subjects"] == 24
    assert training["kernel"]["terms"][0]["bandwidth"] == 12.5
    assert "61.25" not in (out / "configs" / "metadata.json").read_text()  # no kernel reference points
    cohort = Cohort.from_manifest(synthetic_3d_manifest)
    ids = set(cohort.subject_ids) | set(cohort.patient_ids)
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    leaked = sorted(i for i in ids if any(i.encode() in b for b in blobs))
    assert not leaked, f"ids found in the bundle: {leaked[:5]}"
    loaded = load_encoder(out)
    reference = load_encoder(run_dir)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x))


def test_cli_export_onnx_default_path(run_dir, capsys):
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    assert (run_dir / "export" / "encoder.onnx").is_file()
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_cli_export_without_encoder_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("manifest: m.yaml\n")
    target = str(tmp_path / "e.safetensors")
    assert main(["export", str(run), "--format", "safetensors", "--out", target]) == 2
    err = capsys.readouterr().err
    assert "encoder.safetensors" in err and "Traceback" not in err
    assert main(["export", str(run), "--format", "zip"]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_cli_export_corrupted_encoder_exits_2(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken_run"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("export"))
    (broken / "encoder.safetensors").write_bytes(b"\x00" * 64)
    target = str(tmp_path / "e.safetensors")
    assert main(["export", str(broken), "--format", "safetensors", "--out", target]) == 2
    assert "encoder.safetensors" in capsys.readouterr().err
