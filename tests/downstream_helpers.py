"""Helpers for the probe / fine-tune / export tests: a run directory without pretraining."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

TINY = {"arch": "resnet10", "widths": [4, 8, 8, 8]}


def tiny_encoder(spatial_dims: int = 3, in_channels: int = 1, seed: int = 0):
    """A ResNet-10 with 4-8 channels: milliseconds per image at 16^3."""
    import torch

    from medcl.models.encoders import EncoderSpec, build_encoder

    torch.manual_seed(seed)
    spec = EncoderSpec(spatial_dims=spatial_dims, in_channels=in_channels, **TINY)
    return build_encoder(spec).eval()


def make_run_dir(path: Path, manifest: Path, *, seed: int = 0) -> Path:
    """A run directory holding what a finished pretraining leaves for downstream use:
    config.yaml, split.csv, encoder.safetensors + encoder.json (random weights)."""
    from medcl.data.cohort import Cohort
    from medcl.export import export_module
    from medcl.pretrain.loop import input_spec

    cohort = Cohort.from_manifest(manifest)
    m = cohort.manifest
    path.mkdir(parents=True)
    encoder = tiny_encoder(m.image.spatial_dims, m.image.channels, seed=seed)
    export_module(encoder, input_spec(m), "safetensors", path / "encoder.safetensors")
    kernel = {  # as pretraining writes it: the fitted reference holds per-subject values
        "combine": "product",
        "terms": [{"name": "age", "kind": "rbf", "start": 0, "stop": 1, "bandwidth": None, "weight": 1.0}],
        "fitted": {"bandwidths": {"age": 12.5}, "references": {"age": {"points": [[61.25]], "weights": [1.0]}}},
    }
    config = {
        "manifest": str(manifest),
        "method": "kernel_du",
        "attributes": ["age", "sex"],
        "encoder": {"arch": "resnet10", "widths": [4, 8, 8, 8]},
        "epochs": 1,
        "batch_size": 4,
        "kernel": kernel,
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame(
        {"subject_id": cohort.subject_ids, "patient_id": cohort.patient_ids, "split": cohort.split()}
    ).to_csv(path / "split.csv", index=False)
    return path
