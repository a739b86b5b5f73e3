"""Helpers for the cohort tests: write a tiny table + manifest (+ images) into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import yaml


def write_nifti(path: Path, shape: tuple[int, ...] = (6, 5, 4), seed: int = 0) -> Path:
    """A tiny float32 NIfTI image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def pydicom_file(name: str) -> Path:
    """A test file shipped with pydicom (never downloads)."""
    from pydicom.data import get_testdata_file

    p = get_testdata_file(name, download=False)
    assert p is not None, f"pydicom test file {name} is not installed"
    return Path(p)


def pydicom_series_folder() -> Path:
    """A 5-slice CT series in its own folder, shipped with pydicom (dicomdirtests/98892001/CT5N)."""
    return pydicom_file("CT_small.dcm").parent / "dicomdirtests" / "98892001" / "CT5N"


def copy_into(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def basic_rows(n: int = 8) -> list[dict[str, Any]]:
    """n subjects of n // 2 patients (two images each), alternating labels and sites."""
    return [
        {
            "subject_id": f"s{i:02d}",
            "patient_id": f"p{i // 2:02d}",
            "image": f"img/s{i:02d}.nii.gz",
            "age": str(40 + 3 * i),
            "sex": "MF"[i // 2 % 2],
            "site": "ABC"[i % 3],
            "dx": ["CN", "AD"][i // 2 % 2],
            "score": str(10 + i),
            "split": ["train", "train", "val", "test"][i // 2 % 4],
        }
        for i in range(n)
    ]


def basic_manifest(**overrides: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": "tiny",
        "table": "table.csv",
        "subject_column": "subject_id",
        "patient_column": "patient_id",
        "image": {"column": "image", "kind": "3d"},
        "preprocessing": {"size": [8, 8, 8]},
        "attributes": [
            {"name": "age", "type": "continuous"},
            {"name": "sex", "type": "binary"},
            {"name": "site", "type": "categorical", "categories": ["C", "B", "A"]},
        ],
        "labels": [
            {"name": "dx", "type": "binary", "positive": "AD"},
            {"name": "score", "type": "continuous"},
        ],
        "split": {"column": "split"},
    }
    m.update(overrides)
    return m


def write_cohort(
    root: Path,
    rows: list[dict[str, Any]] | None = None,
    manifest: dict[str, Any] | None = None,
    *,
    images: bool = True,
) -> Path:
    """Write table.csv, manifest.yaml and (for rows' .nii.gz paths) tiny NIfTI images; return the manifest."""
    rows = basic_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "table.csv", index=False)
    if images:
        for k, r in enumerate(rows):
            img = str(r.get("image") or "")
            if img.endswith(".nii.gz") and ".." not in img:
                write_nifti(root / img, seed=k)
    path = root / "manifest.yaml"
    path.write_text(yaml.safe_dump(basic_manifest() if manifest is None else manifest, sort_keys=False))
    return path
