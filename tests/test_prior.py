"""The VAE prior: per-subject latent means usable as an embedding attribute of the kernel."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _pretrain_helpers import cli

from medcl.data.cohort import Cohort


def test_vae_prior_writes_features_a_manifest_can_use(synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cohort"
    shutil.copytree(synthetic_2d_manifest.parent, folder)
    out = folder / "vae.csv"
    code = cli(["prior", "vae", "--manifest", folder / "manifest.yaml", "--out", out, "--epochs", "2",
                "--latent-dim", "4"])
    assert code == 0
    table = pd.read_csv(out)
    cohort = Cohort.from_manifest(folder / "manifest.yaml")
    assert list(table.columns) == ["subject_id", "vae_0", "vae_1", "vae_2", "vae_3"]
    assert list(table["subject_id"].astype(str)) == cohort.subject_ids
    feats = table.iloc[:, 1:].to_numpy()
    assert np.isfinite(feats).all() and feats.std(axis=0).min() > 0  # subjects differ

    data = yaml.safe_load((folder / "manifest.yaml").read_text())
    data["attributes"].append({"name": "vae", "type": "embedding", "features": "vae.csv"})
    (folder / "manifest.yaml").write_text(yaml.safe_dump(data))
    values, missing, _ = Cohort.from_manifest(folder / "manifest.yaml").attribute_matrix(["vae"])
    assert values.shape == (len(cohort), 4) and not missing.any()
    np.testing.assert_allclose(values, feats, rtol=1e-5)


def test_vae_prior_refuses_unknown_format(synthetic_2d_manifest: Path, tmp_path: Path, capsys) -> None:
    assert cli(["prior", "vae", "--manifest", synthetic_2d_manifest, "--out", tmp_path / "v.xlsx"]) == 2
    assert "v.xlsx" in capsys.readouterr().err
