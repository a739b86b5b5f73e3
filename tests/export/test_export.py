"""Export -> load round trips for every format, bundle compliance, privacy and bad files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_helpers import make_run_dir, tiny_encoder
from isolation import without_package

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


@pytest.mark.filterwarnings("ignore:Cannot find the config file")  # mb.load without a workflow: weights only
def test_bundle_passes_monais_own_offline_checks(tmp_path):
    import monai.bundle as mb

    encoder = tiny_encoder()
    bundle = export_module(encoder, INPUT_3D, "bundle", tmp_path / "bundle")
    meta_file, config_file = bundle / "configs" / "metadata.json", bundle / "configs" / "inference.json"
    # MONAI's bundle loader reads metadata and configs from the folder layout it expects
    parser = mb.load_bundle_config(str(bundle), "inference.json")
    assert parser["_meta_"]["network_data_format"]["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network")
    parser.get_parsed_content("load_weights")
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network.eval()(x), encoder(x), atol=1e-5, rtol=0)
    # MONAI's own input/output check of the network against network_data_format (raises on a mismatch)
    mb.verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(config_file), device="cpu")
    # MONAI's bundle loading finds the weights at its standard place (the folder exists: no download)
    state = mb.load(name="bundle", bundle_dir=str(tmp_path), source="github", model_file="models/model.pt",
                    workflow_type="infer", device="cpu")
    assert set(state) == set(encoder.backbone.state_dict())  # the MONAI network's own keys
    assert all(torch.equal(state[k], v) for k, v in encoder.backbone.state_dict().items())
    # the check can fail: a metadata that promises 9 output channels is refused by MONAI
    meta = json.loads(meta_file.read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 9
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output channel"):
        mb.verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(config_file),
                             device="cpu")


_MONAI_ONLY = without_package("medcl") + """
import torch
from monai.bundle import ConfigParser

inputs = torch.load(sys.argv[1], weights_only=True)
outputs = {}
for name, item in inputs.items():
    parser = ConfigParser()
    parser.read_config(item["bundle"] + "/configs/inference.json")
    parser["bundle_root"] = item["bundle"]
    network = parser.get_parsed_content("network").eval()
    parser.get_parsed_content("load_weights")
    with torch.no_grad():
        outputs[name] = network(item["x"])
        if "image" in item:
            image = parser.get_parsed_content("preprocessing")({"image": item["image"]})["image"]
            outputs[name + "/image"] = network(torch.as_tensor(image)[None])
assert not [m for m in sys.modules if m == "medcl" or m.startswith("medcl.")]
torch.save(outputs, sys.argv[2])
"""


def test_bundle_runs_with_monai_alone_and_reproduces_the_encoder(tmp_path):
    """In a process where medcl cannot be imported, monai.bundle builds the network, loads the weights
    and preprocesses a scan; features equal medcl's encoder on medcl's preprocessing."""
    from medcl.data.manifest import parse_manifest
    from medcl.data.transforms import preprocessing_transforms
    from medcl.models.encoders import EncoderSpec, build_encoder
    from medcl.pretrain.loop import input_spec

    scan = _nifti(tmp_path / "scan.nii.gz")
    preprocessing = {k: INPUT_3D[k] for k in ("size", "spacing", "orientation", "intensity")}
    manifest = parse_manifest({"table": "t.csv", "image": {"kind": "3d"}, "preprocessing": preprocessing}, source="t")
    variants = {  # ResNet as MONAI builds it; block norms swapped; DenseNet with its own stem, features out
        "resnet10": (EncoderSpec(arch="resnet10", widths=[4, 8, 8, 8], spatial_dims=3, in_channels=1), [1, 16, 16, 16]),
        "resnet18-group": (EncoderSpec(arch="resnet18", widths=[4, 4, 8, 8], norm="group", spatial_dims=3,
                                       in_channels=1), [1, 16, 16, 16]),
        "densenet-2d": (EncoderSpec(arch="densenet121", widths=[4, 4], first_stride=1, first_kernel=3,
                                    spatial_dims=2, in_channels=2), [2, 32, 32]),
    }
    inputs, expected = {}, {}
    for name, (spec, shape) in variants.items():
        torch.manual_seed(0)
        encoder = build_encoder(spec).eval()
        spec_in = input_spec(manifest) if name == "resnet10" else {"channels": shape[0], "size": shape[1:]}
        bundle = export_module(encoder, spec_in, "bundle", tmp_path / name)
        x = torch.randn(2, *shape)
        inputs[name] = {"bundle": str(bundle), "x": x}
        with torch.no_grad():
            expected[name] = encoder(x)
            if name == "resnet10":
                inputs[name]["image"] = str(scan)
                image = preprocessing_transforms(manifest)({"image": str(scan)})["image"]
                expected[name + "/image"] = encoder(torch.as_tensor(image)[None])
    torch.save(inputs, tmp_path / "inputs.pt")
    run = subprocess.run([sys.executable, "-c", _MONAI_ONLY, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(got) == set(expected)
    for name, features in expected.items():
        torch.testing.assert_close(got[name], features, atol=1e-5, rtol=0, msg=name)
    bundle_config = json.loads((tmp_path / "resnet10" / "configs" / "inference.json").read_text())
    assert "medcl" not in json.dumps(bundle_config)
    assert bundle_config["network_def"]["_target_"] == "monai.networks.nets.ResNet"


def test_bundles_with_the_encoders_own_keys_still_load(tmp_path):
    from safetensors.torch import load_file, save_file

    encoder = tiny_encoder()
    bundle = export_module(encoder, INPUT_3D, "bundle", tmp_path / "bundle")
    weights_file = bundle / "models" / "model.safetensors"
    weights = load_file(str(weights_file))
    assert not any(k.startswith("backbone.") for k in weights)
    metadata = {"medcl.json": json.dumps(json.loads((bundle / "configs" / "metadata.json").read_text())["medcl"])}
    save_file({"backbone." + k: v for k, v in weights.items()}, str(weights_file), metadata=metadata)  # old layout
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(bundle)(x), encoder(x))


def test_bundle_metadata_check_reports_missing_keys():
    problems = check_bundle_metadata({"version": "1", "network_data_format": {"inputs": {"image": {}}}})
    assert "missing key 'task'" in problems
    assert any("outputs" in p for p in problems)
    assert any("inputs.image: missing key 'spatial_shape'" in p for p in problems)


def _rgb_png(path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), mode="RGB").save(path)
    return path


def _nifti(path: Path) -> Path:
    from cohort_factory import write_nifti

    return write_nifti(path, shape=(20, 18, 12))


def _dicom_series(path: Path) -> Path:
    from cohort_factory import copy_into, pydicom_series_folder

    return copy_into(pydicom_series_folder(), path)


@pytest.mark.parametrize(("make", "kind", "preprocessing"), [
    (_nifti, "3d", {"size": [16, 16, 16], "spacing": [2.0, 2.0, 2.0], "orientation": "RAS",
                    "intensity": {"method": "zscore", "nonzero": True}}),
    (_rgb_png, "2d", {"size": [32, 32], "intensity": {"method": "percentile", "lower": 1, "upper": 99}}),
    (_dicom_series, "3d", {"size": [64, 64, 8], "intensity": {"method": "minmax"}}),
], ids=["nifti", "colour-png", "dicom-series"])
def test_bundle_preprocessing_gives_the_tensor_medcl_trains_on(tmp_path, make, kind, preprocessing):
    from monai.bundle import ConfigParser

    from medcl.data.manifest import parse_manifest
    from medcl.data.transforms import preprocessing_transforms
    from medcl.pretrain.loop import input_spec

    name = {"_nifti": "img.nii.gz", "_rgb_png": "img.png", "_dicom_series": "series"}[make.__name__]
    image = make(tmp_path / name)
    manifest = parse_manifest({"table": "t.csv", "image": {"kind": kind}, "preprocessing": preprocessing},
                              source="test")
    expected = preprocessing_transforms(manifest)({"image": str(image)})["image"]
    parser = ConfigParser(bundle_inference_config({"spec": {"arch": "resnet10"}, "input": input_spec(manifest)}))
    got = parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]
    assert got.shape == expected.shape == (1, *preprocessing["size"])  # one channel: colour became grey
    assert got.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), atol=0, rtol=0)
    assert float(expected.std()) > 0  # a real image, not an empty one


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
    root = Path(__file__).resolve().parents[2] / "medcl"
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
    assert training["cohort"]["subjects"] == 20  # 24 subjects, rounded to 10 (docs/privacy.md)
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


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "bundle"])
def test_cli_export_adds_the_extension_quietly_with_default_permissions(run_dir, tmp_path, fmt, capfd):
    import os

    out = tmp_path / "my_encoder"
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
    printed = capfd.readouterr()
    target = tmp_path / f"my_encoder{SUFFIX[fmt]}"
    assert target.is_file() and not out.exists()
    assert str(target) in printed.out and ".tmp" not in printed.out + printed.err
    assert printed.err == ""  # no torch warning about the missing extension, nothing else
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([target.name] + (["my_encoder.json"] if fmt == "safetensors" else []))
    umask = os.umask(0)
    os.umask(umask)
    for path in tmp_path.iterdir():  # safetensors used to come out 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
    with torch.no_grad():
        x = torch.randn(2, 1, 16, 16, 16)
        torch.testing.assert_close(load_encoder(target)(x), load_encoder(run_dir)(x), atol=1e-4, rtol=0)


def test_export_refuses_another_formats_extension_and_hides_temporary_paths(run_dir, tmp_path, capsys):
    import dataclasses

    import medcl.export as export
    import medcl.export.onnx_file as onnx_file

    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "enc.pt")]) == 2
    err = capsys.readouterr().err
    assert "enc.pt" in err and "enc.onnx" in err and "torchscript" in err
    assert export.with_format_suffix(Path("a/enc.pth"), "torchscript") == Path("a/enc.pth")
    assert export.with_format_suffix(Path("a/enc.v2"), "onnx") == Path("a/enc.v2.onnx")

    def failing_writer(module, doc, out, x):
        raise RuntimeError(f"cannot write {out}: disk full")

    with export.registered(dataclasses.replace(onnx_file.FORMAT, write=failing_writer)):
        assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'enc.onnx'}: disk full" in err and ".tmp" not in err
    assert list(tmp_path.iterdir()) == []
