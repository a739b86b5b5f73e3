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


#: a 2D cohort where the diagnosis is easy to see: strong lesion, no site effects, little noise
EASY_KNOBS = {"lesion_strength": 1.0, "disease_years": 40.0, "site_gamma": 0.0, "site_bias": 0.0,
              "site_scale": 0.0, "noise_level": 0.01, "site_noise": 0.0}
#: fine-tuning that learns it from a random tiny encoder in ~2 s (see test_finetune_learns_an_easy_label)
EASY_TRAINING = {"mode": "full", "init": "scratch", "lr": 3e-3, "augmentation": "none", "epochs": 10,
                 "device": "cpu", "n_boot": 100}


def easy_cohort(out: Path, subjects: int = 120) -> Path:
    """120 PNG scans at 32^2 with an easily visible diagnosis; returns the manifest path."""
    from medcl.data.synthetic import generate_cohort

    return generate_cohort(out, dims=2, subjects=subjects, size=32, seed=0, image_format="png", **EASY_KNOBS)


def with_split_column(manifest: Path, out: Path) -> Path:
    """A copy of a cohort whose split is a table column (the original's split), so that label
    changes do not move subjects between splits; returns the copy's manifest."""
    import shutil

    from medcl.data.cohort import Cohort

    split = Cohort.from_manifest(manifest).split()
    shutil.copytree(manifest.parent, out)
    table = pd.read_csv(out / "participants.csv")
    table["split"] = split
    table.to_csv(out / "participants.csv", index=False)
    doc = yaml.safe_load((out / "manifest.yaml").read_text())
    doc["split"] = {"method": "column", "column": "split"}
    (out / "manifest.yaml").write_text(yaml.safe_dump(doc))
    return out / "manifest.yaml"
