"""The encoder document (medcl.models.saved): one writer, one loader, one version key, one
random-init rebuild; run directories written before the key was unified still load."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from downstream_helpers import TINY, make_run_dir, tiny_encoder
from safetensors.torch import save_file

import medcl
from medcl.data.cohort import Cohort
from medcl.errors import MedclInputError
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.models.saved import (
    ENCODER_FORMAT,
    FORMAT_VERSION,
    VERSION_KEY,
    document_version,
    load_safetensors,
    random_encoder,
    read_safetensors,
    state_dict_copy,
)
from medcl.pretrain.loop import export_run_encoder
from medcl.pretrain.run_dir import RunDir


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _old_style_run(path: Path, manifest: Path) -> RunDir:
    """A run directory as medcl wrote it before the encoder document was unified: encoder.json with
    ``version`` and a top-level ``method``, a bare safetensors header, the kernel in kernel.json too."""
    run = RunDir(make_run_dir(path, manifest))
    new = json.loads(run.encoder_json.read_text())
    old = {"format": ENCODER_FORMAT, "version": 1, "spec": new["spec"], "out_features": new["out_features"],
           "input": new["input"], "method": "kernel_du"}
    run.encoder_json.write_text(json.dumps(old, indent=2) + "\n")
    weights, _ = read_safetensors(run.encoder_weights)
    save_file(weights, str(run.encoder_weights), metadata={"format": ENCODER_FORMAT})
    kernel = yaml.safe_load(run.config_path.read_text())["kernel"]
    run.kernel_path.write_text(json.dumps(kernel, indent=2) + "\n")
    return run


def test_an_old_run_directory_still_loads_reads_its_kernel_and_exports(
        synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    run = _old_style_run(tmp_path / "run", synthetic_2d_manifest)
    x = torch.randn(2, 1, 32, 32)
    reference = tiny_encoder(2, 1, seed=0)

    for encoder in (run.load_encoder(), medcl.load_encoder(run.path),
                    load_safetensors(run.encoder_weights, run.encoder_json)):
        assert torch.allclose(encoder(x), reference(x))
        doc = encoder.metadata
        assert doc[VERSION_KEY] == 1 and "version" not in doc  # read as today's document
        assert doc["training"] == {"method": "kernel_du"}
    assert document_version({"version": 1}) == document_version({"format_version": 1}) == 1

    config_kernel = yaml.safe_load(run.config_path.read_text())["kernel"]
    assert run.kernel_dict() == config_kernel and run.kernel() is not None
    data = yaml.safe_load(run.config_path.read_text())
    data["kernel"] = None  # a run whose config.yaml lacks it: kernel.json is the fallback
    run.config_path.write_text(yaml.safe_dump(data))
    assert run.kernel_dict() == config_kernel

    from medcl.export import export_encoder

    out = export_encoder(run.path, "safetensors", tmp_path / "enc.safetensors")
    assert torch.allclose(medcl.load_encoder(out)(x), reference(x))


def test_a_run_writes_todays_document_and_its_weights_load_alone(synthetic_2d_manifest: Path,
                                                                 tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    encoder = tiny_encoder(2, 1, seed=4)
    manifest = Cohort.from_manifest(synthetic_2d_manifest).manifest
    export_run_encoder(run, SimpleNamespace(encoder=encoder, config=SimpleNamespace(method="simclr")), manifest)

    doc = json.loads(run.encoder_json.read_text())
    assert list(doc) == ["format", "format_version", "medcl_version", "spec", "input", "out_features", "training"]
    assert doc["format"] == ENCODER_FORMAT and doc[VERSION_KEY] == FORMAT_VERSION
    assert doc["training"] == {"method": "simclr"} and doc["out_features"] == encoder.out_features
    weights, header = read_safetensors(run.encoder_weights)
    assert header["format"] == ENCODER_FORMAT and json.loads(header["medcl.json"]) == doc
    assert all(torch.equal(weights[k], v) for k, v in state_dict_copy(encoder).items())

    assert _same_weights(run.load_encoder(), encoder)
    run.encoder_json.unlink()  # the weights file alone carries its document
    alone = load_safetensors(run.encoder_weights)
    assert _same_weights(alone, encoder) and alone.metadata == doc
    with pytest.raises(MedclInputError, match=r"encoder\.json missing"):
        run.load_encoder()


def test_random_encoder_is_what_probe_and_compare_build(tmp_path: Path) -> None:
    spec = EncoderSpec(spatial_dims=2, in_channels=1, **TINY)
    torch.manual_seed(7)
    expected = build_encoder(spec)
    from_spec = random_encoder(spec, 7)  # compare's random_init arm
    from_document = random_encoder(spec.model_dump(mode="json"), 7, {"channels": 1})  # medcl probe --random-init
    assert _same_weights(from_spec, expected) and _same_weights(from_document, expected)
    assert not from_spec.training and from_document.input_spec == {"channels": 1}
    assert not _same_weights(random_encoder(spec, 8), expected)
