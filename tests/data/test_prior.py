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


def test_vae_prior_is_fitted_on_the_training_split_only(synthetic_2d_manifest: Path, tmp_path: Path) -> None:
    from PIL import Image

    from medcl.data.vae_prior import VAEOptions, fit_vae_prior

    same, changed = tmp_path / "same", tmp_path / "changed"
    shutil.copytree(synthetic_2d_manifest.parent, same)
    shutil.copytree(synthetic_2d_manifest.parent, changed)
    cohort = Cohort.from_manifest(changed / "manifest.yaml")
    train = np.asarray(cohort.split()) == "train"
    assert 0 < train.sum() < len(cohort)
    rng = np.random.default_rng(0)
    for path, is_train in zip(cohort.image_paths, train, strict=True):  # replace every held-out image
        if not is_train:
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)

    def latents(folder: Path, fit_split: str) -> np.ndarray:
        out = fit_vae_prior(folder / "manifest.yaml", folder / f"vae_{fit_split}.csv",
                            VAEOptions(epochs=2, latent_dim=4, fit_split=fit_split))
        return pd.read_csv(out).iloc[:, 1:].to_numpy()

    a, b = latents(same, "train"), latents(changed, "train")
    np.testing.assert_allclose(b[train], a[train], rtol=0, atol=1e-6)  # held-out images never seen in fitting
    assert not np.allclose(b[~train], a[~train])  # (they are encoded, and they did change)
    a_all, b_all = latents(same, "all"), latents(changed, "all")
    assert not np.allclose(b_all[train], a_all[train], atol=1e-4)  # fitting on all subjects would see them
