"""The export-format table: a format added as one record is offered by the CLI, written, checked and loaded."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_helpers import make_run_dir, tiny_encoder

from medcl.cli import main
from medcl.cli.export_commands import help_text
from medcl.errors import MedclInputError
from medcl.export import (
    FORMATS,
    ExportCheckError,
    ExportFormat,
    Sidecar,
    export_formats,
    export_module,
    format_names,
    get_format,
    load_encoder,
    registered,
)
from medcl.models.saved import rebuild_encoder, state_dict_copy

INPUT_3D = {"channels": 1, "spatial_dims": 3, "size": [16, 16, 16], "intensity": {"method": "none"}}


# -- a toy format: weights and document in a numpy .npz archive (+ a .txt note) -------------------------


def _write_npz(module, doc, out: Path, x) -> list[Path]:
    arrays = {k: v.numpy() for k, v in state_dict_copy(module).items()}
    with open(out, "wb") as f:  # a file object: numpy would append .npz to a name
        np.savez(f, __doc__=np.array(json.dumps(doc)), **arrays)
    note = out.with_suffix(".txt")
    note.write_text("weights as numpy arrays\n")
    return [out, note]


def _load_npz(path: Path) -> torch.nn.Module:
    with np.load(path) as archive:
        doc = json.loads(str(archive["__doc__"]))
        weights = {k: torch.from_numpy(archive[k]) for k in archive.files if k != "__doc__"}
    return rebuild_encoder(doc, weights, path)


def _sniff_npz(path: Path) -> bool:
    return zipfile.is_zipfile(path) and "__doc__.npy" in zipfile.ZipFile(path).namelist()


NPZ = ExportFormat(
    name="npz", summary="numpy arrays", expected=".npz", write=_write_npz, load=_load_npz,
    suffixes=(".npz",), sidecars=(Sidecar(".txt", "a note"),), sniff=_sniff_npz,
)


@pytest.fixture
def npz_format():
    with registered(NPZ) as fmt:
        yield fmt
    assert "npz" not in format_names()  # the table is as before


def test_a_registered_format_is_offered_written_loaded_and_checked(npz_format, tmp_path):
    assert format_names()[-1] == "npz" and get_format("npz") is npz_format
    assert "npz (numpy arrays)" in help_text()  # what `medcl export --help` would list
    encoder = tiny_encoder()
    out = export_module(encoder, INPUT_3D, "npz", tmp_path / "enc")  # the suffix is added
    assert out == tmp_path / "enc.npz" and (tmp_path / "enc.txt").is_file()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(out)(x), encoder(x), atol=1e-5, rtol=0)
    renamed = out.rename(tmp_path / "enc.weights")  # no format claims .weights: found by content
    assert load_encoder(renamed).out_features == encoder.out_features


def test_the_roundtrip_check_covers_a_registered_format(npz_format, tmp_path):
    def other_weights(module, doc, out, x):  # a writer that loses the encoder's weights
        return _write_npz(tiny_encoder(seed=1), doc, out, x)

    with registered(dataclasses.replace(npz_format, write=other_weights)):
        with pytest.raises(ExportCheckError, match="does not reproduce the features"):
            export_module(tiny_encoder(), INPUT_3D, "npz", tmp_path / "enc")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_cli_exports_a_registered_format(npz_format, synthetic_3d_manifest, tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", synthetic_3d_manifest)
    assert main(["export", str(run), "--format", "npz"]) == 0
    printed = capsys.readouterr().out
    assert str(run / "export" / "encoder.npz") in printed and f"a note: {run / 'export' / 'encoder.txt'}" in printed


def test_the_table_refuses_a_suffix_another_format_claims():
    with pytest.raises(ValueError, match="already format 'onnx'"), registered(
        ExportFormat(name="other", summary="", expected=".onnx", write=_write_npz, load=_load_npz, suffixes=(".onnx",))
    ):
        pass
    with pytest.raises(ValueError, match="suffixes"):
        ExportFormat(name="both", summary="", expected="", write=_write_npz, load=_load_npz, folder=True,
                     suffixes=(".x",))


def test_the_built_in_table():
    assert FORMATS == format_names() == ("bundle", "safetensors", "torch-export", "torchscript", "onnx")
    assert [f.suffix for f in export_formats()] == ["", ".safetensors", ".pt2", ".pt", ".onnx"]
    assert [f.name for f in export_formats() if f.folder] == ["bundle"]
    with pytest.raises(MedclInputError, match="choose one of"):
        get_format("zip")
