"""Synthetic cohorts whose generative story makes kernel decoupled uniformity's point testable.

Every scan belongs to a *subject* (one row of the table); some patients have two sessions, so
patient != subject and splits must group by patient. Each patient has an age, a sex and a scanner
site. A diagnosis ("disease") looks like accelerated ageing: a diseased subject's *apparent* age is
``age + disease_years * severity``, and the image also carries a small local change at a fixed
location (``lesion_strength * severity``). Clinical scores are noisy read-outs of severity. Sites
leave a systematic signature (intensity gamma curve, smooth bias field, noise level and texture)
that random augmentation does not remove, so instance discrimination alone latches onto the site.

- 3D: brain-MRI-like phantoms (head ellipsoid, skull, CSF, cortex, white matter, ventricles) as
  NIfTI. With apparent age the brain shrinks, the cortex thins and the ventricles enlarge.
- 2D: chest-X-ray-like phantoms (body, lungs, heart, ribs, spine) as PNG (8/16-bit) or DICOM
  (secondary capture). With apparent age the heart enlarges, lungs get denser, ribs fainter.

Same seed and settings give byte-identical tables and images.

Why this size: one generative story (table, anatomy, site effects) and its four writers
(NIfTI, PNG, DICOM, manifest); the pieces share the config and seeds, so they stay together.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medcl.atomic import atomic_path
from medcl.errors import MedclInputError

__all__ = ["SyntheticConfig", "generate_cohort"]

ImageFormat = Literal["nifti", "png", "dicom"]
_EXTENSIONS = {"nifti": ".nii.gz", "png": ".png", "dicom": ".dcm"}
_YOUNG, _SPAN = 20.0, 70.0  # apparent age maps to an "ageing fraction" (age - 20) / 70


class SyntheticConfig(BaseModel):
    """Strength of every effect in the synthetic cohort (0 switches an effect off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    age_min: float = Field(20.0, ge=0)
    age_max: float = Field(90.0, gt=0)
    age_effect: float = Field(1.0, ge=0, description="strength of ageing on the anatomy")
    brain_age_noise: float = Field(3.0, ge=0, description="sd (years) of apparent age around true age")
    sex_effect: float = Field(0.06, ge=0, description="relative head/body size difference M vs F")
    second_session_fraction: float = Field(0.25, ge=0, le=1, description="patients with two scans")
    session_gap_years: float = Field(2.0, ge=0)
    prevalence: float = Field(0.35, gt=0, lt=1, description="fraction of diseased patients")
    disease_years: float = Field(15.0, ge=0, description="extra apparent years at severity 1")
    lesion_strength: float = Field(0.6, ge=0, le=1, description="local change at severity 1")
    n_sites: int = Field(3, ge=1, le=26)
    site_diagnosis_association: float = Field(
        0.2, ge=0, le=1, description="relative spread of prevalence across sites (0 = independent)"
    )
    site_gamma: float = Field(0.35, ge=0, description="max |log gamma| of the sites' intensity curves")
    site_bias: float = Field(0.3, ge=0, description="amplitude of the sites' smooth bias fields")
    site_scale: float = Field(0.2, ge=0, description="relative spread of the sites' intensity units")
    noise_level: float = Field(0.03, ge=0, description="base noise sd (tissue intensity ~1)")
    site_noise: float = Field(1.0, ge=0, description="relative spread of the sites' noise levels")
    site_noise_texture: float = Field(1.0, ge=0, description="max noise smoothing (voxels) across sites")
    n_scores: int = Field(3, ge=0, le=10, description="clinical scores correlated with severity")
    score_noise: float = Field(0.5, ge=0, description="sd of score noise (score range ~ 0..2)")
    missing_fraction: float = Field(0.05, ge=0, lt=1, description="fraction of missing scores")
    bit_depth: Literal[8, 16] = Field(8, description="PNG bit depth (DICOM is always 16-bit)")


# --------------------------------------------------------------------------- cohort table


def _spaced(n: int) -> np.ndarray:
    """n values evenly spread in [-1, 1] (0 for a single site)."""
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def _site_effects(cfg: SyntheticConfig, dims: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 7919])
    k = cfg.n_sites
    order = rng.permutation(k)  # which site gets which position on each axis of variation
    coeffs = rng.normal(size=(k, 3 * dims))  # linear + quadratic bias-field terms per axis
    coeffs /= np.linalg.norm(coeffs, axis=1, keepdims=True)
    return {
        "log_gamma": cfg.site_gamma * _spaced(k)[order],
        "bias": cfg.site_bias * coeffs,
        "noise": cfg.noise_level * np.exp(0.7 * cfg.site_noise * _spaced(k)[rng.permutation(k)]),
        "texture": cfg.site_noise_texture * (_spaced(k)[rng.permutation(k)] + 1) / 2,
        "scale": 1.0 + cfg.site_scale * _spaced(k)[rng.permutation(k)],
        "prevalence": np.clip(
            cfg.prevalence * (1 + cfg.site_diagnosis_association * _spaced(k)[rng.permutation(k)]),
            0.02,
            0.98,
        ),
    }


def _cohort_table(cfg: SyntheticConfig, subjects: int, seed: int, sites: dict[str, np.ndarray]):
    import pandas as pd

    rng = np.random.default_rng([seed, 1])
    rows: list[dict[str, Any]] = []
    patient = 0
    while len(rows) < subjects:
        patient += 1
        sessions = 2 if (rng.random() < cfg.second_session_fraction and subjects - len(rows) >= 2) else 1
        site = int(rng.integers(cfg.n_sites))
        sex = "M" if rng.random() < 0.5 else "F"
        age0 = rng.uniform(cfg.age_min, cfg.age_max)
        diseased = rng.random() < sites["prevalence"][site]
        severity0 = rng.uniform(0.3, 1.0) if diseased else 0.0
        for ses in range(1, sessions + 1):
            age = round(age0 + (ses - 1) * cfg.session_gap_years, 1)
            severity = min(1.0, severity0 * (1 + 0.05 * (ses - 1) * cfg.session_gap_years))
            brain_age = age + cfg.disease_years * severity + rng.normal(0, cfg.brain_age_noise)
            rows.append(
                {
                    "subject_id": f"s{len(rows) + 1:05d}",
                    "patient_id": f"p{patient:05d}",
                    "session": ses,
                    "age": age,
                    "sex": sex,
                    "site": f"site{chr(ord('A') + site)}",
                    "diagnosis": "disease" if diseased else "control",
                    "severity": round(severity, 4),
                    "brain_age": round(brain_age, 2),
                }
            )
    table = pd.DataFrame(rows)
    if patient >= 2 and table["diagnosis"].nunique() == 1:  # tiny cohorts: keep both classes
        last = table["patient_id"] == table["patient_id"].iloc[-1]
        to_disease = table["diagnosis"].iloc[-1] == "control"
        severity = np.where(to_disease, 0.65, 0.0)
        table.loc[last, "brain_age"] += cfg.disease_years * (severity - table.loc[last, "severity"])
        table.loc[last, "brain_age"] = table.loc[last, "brain_age"].round(2)
        table.loc[last, "severity"] = float(severity)
        table.loc[last, "diagnosis"] = "disease" if to_disease else "control"
    loadings = np.array([1.0, -0.8, 0.6, 0.9, -0.5, 0.7, 0.4, -0.9, 0.8, 0.5])
    for j in range(cfg.n_scores):
        score = 2 * loadings[j] * table["severity"].to_numpy() + rng.normal(0, cfg.score_noise, len(table))
        score[rng.random(len(table)) < cfg.missing_fraction] = np.nan
        table[f"score{j + 1}"] = np.round(score, 3)
    return table


# --------------------------------------------------------------------------- phantoms


@functools.lru_cache(maxsize=4)
def _grid(size: int, dims: int) -> tuple[np.ndarray, ...]:
    """Voxel-centre coordinates in [-1, 1] along each axis (broadcastable, not materialised)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    shape = [1] * dims
    out = []
    for d in range(dims):
        s = list(shape)
        s[d] = size
        out.append(c.reshape(s))
    return tuple(out)


def _ellipsoid(coords, centre, radii) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipsoid."""
    r = 0.0
    for x, c, a in zip(coords, centre, radii, strict=True):
        r = r + ((x - c) / a) ** 2
    return np.sqrt(r)


def _brain(coords, row, cfg: SyntheticConfig) -> np.ndarray:
    f = cfg.age_effect * np.clip((row["brain_age"] - _YOUNG) / _SPAN, 0, 1.5)
    s = 1 + cfg.sex_effect * (0.5 if row["sex"] == "M" else -0.5) + row["_jitter"]
    head = np.array([0.72, 0.85, 0.75]) * s
    img = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), np.float32)
    img[_ellipsoid(coords, (0, 0, 0), head) < 1] = 0.35  # scalp and skull
    inner = head - 0.08
    img[_ellipsoid(coords, (0, 0, 0), inner) < 1] = 0.15  # CSF
    r_brain = _ellipsoid(coords, (0, 0, 0), inner * (1 - 0.12 * f))  # brain shrinks
    img[r_brain < 1] = 0.6  # cortex (grey matter)
    img[r_brain < 1 - 0.2 * (1 - 0.5 * f)] = 0.9  # white matter: the cortex thins with age
    v = np.array([0.07, 0.2, 0.1]) * (1 + 1.5 * f)  # ventricles enlarge
    for side in (-1, 1):
        img[_ellipsoid(coords, (side * 0.11, 0.05, 0.1), v) < 1] = 0.15
    if row["severity"] > 0 and cfg.lesion_strength > 0:  # local atrophy at a fixed place
        lesion = _ellipsoid(coords, (0.38, -0.15, -0.2), (0.14, 0.14, 0.14)) < 1
        img[lesion] *= 1 - cfg.lesion_strength * row["severity"]
    return img


def _chest(coords, row, cfg: SyntheticConfig) -> np.ndarray:
    x, y = coords  # x: patient right -> left, y: head -> feet
    f = cfg.age_effect * np.clip((row["brain_age"] - _YOUNG) / _SPAN, 0, 1.5)
    s = 1 + cfg.sex_effect * (0.5 if row["sex"] == "M" else -0.5) + row["_jitter"]
    img = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
    img[_ellipsoid(coords, (0, 0.05), (0.85 * s, 0.98)) < 1] = 0.55  # body soft tissue
    lung_int = 0.12 + 0.1 * f  # lungs get denser with age
    for side in (-1, 1):
        img[_ellipsoid(coords, (side * 0.37 * s, -0.05), (0.27 * s, 0.55)) < 1] = lung_int
    heart = _ellipsoid(coords, (0.1, 0.33), np.array([0.26, 0.2]) * (1 + 0.3 * f))  # heart enlarges
    img[heart < 1] = 0.6
    thorax = _ellipsoid(coords, (0, -0.05), (0.75 * s, 0.62)) < 1
    ribs = np.zeros_like(img, dtype=bool)
    for k in range(8):  # ribs: arcs across the thorax
        ribs |= np.abs(y - (-0.55 + 0.14 * k + 0.18 * x**2)) < 0.025
    img += (0.22 * (1 - 0.4 * min(f, 1.0))) * (ribs & thorax)  # ribs fade (bone loss)
    img += 0.3 * ((np.abs(x) < 0.06) & (np.abs(y) < 0.95))  # spine
    if row["severity"] > 0 and cfg.lesion_strength > 0:  # an opacity at a fixed place
        img[_ellipsoid(coords, (-0.4, 0.1), (0.1, 0.1)) < 1] += 0.5 * cfg.lesion_strength * row["severity"]
    return img


def _acquire(img: np.ndarray, coords, site: int, sites: dict[str, np.ndarray], rng) -> np.ndarray:
    """Apply the scanner site's signature: gamma curve, bias field, noise level and texture."""
    from scipy.ndimage import gaussian_filter

    img = np.clip(img, 0, None) ** np.exp(sites["log_gamma"][site])
    c = sites["bias"][site]
    field = 0.0
    for d, x in enumerate(coords):
        field = field + c[3 * d] * x + c[3 * d + 1] * x**2 + c[3 * d + 2] * x * coords[(d + 1) % len(coords)]
    img = img * np.exp(field)
    noise = rng.standard_normal(img.shape).astype(np.float32)
    width = float(sites["texture"][site])
    if width > 0.05:
        noise = gaussian_filter(noise, width, mode="wrap")
        noise /= noise.std() + 1e-8
    img = np.abs(img + sites["noise"][site] * noise)  # magnitude images: Rician-like floor
    return (img * sites["scale"][site]).astype(np.float32)


# --------------------------------------------------------------------------- writers


def _write_nifti(path: Path, img: np.ndarray, spacing: float) -> None:
    import nibabel as nib

    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.array(img.shape) - 1) / 2
    data = np.clip(np.round(img * 1000), 0, 32767).astype(np.int16)
    nii = nib.Nifti1Image(data, affine)
    nii.header.set_xyzt_units("mm")
    nii.header.set_qform(affine, code=1)
    nii.header.set_sform(affine, code=1)
    nib.save(nii, path)


def _to_uint(img: np.ndarray, bits: int) -> np.ndarray:
    top = 2**bits - 1
    return np.clip(np.round(img / 1.5 * top), 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def _write_png(path: Path, img: np.ndarray, bits: int) -> None:
    from PIL import Image

    arr = _to_uint(img.T, bits)  # rows = y (head -> feet), columns = x
    Image.fromarray(arr).save(path, optimize=False)


def _write_dicom(path: Path, img: np.ndarray, row: dict, spacing: float, seed: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = _to_uint(img.T, 12).astype(np.uint16)
    ent = [str(seed), row["patient_id"], row["subject_id"]]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[*ent, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*ent, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*ent, "series"])
    ds.PatientID = row["patient_id"]
    ds.PatientName = row["patient_id"]
    ds.PatientSex = row["sex"]
    ds.PatientAge = f"{int(row['age']):03d}Y"
    ds.StudyDate = f"{2020 + int(row['session'])}0101"
    ds.StudyID = str(row["session"])
    ds.Modality = "OT"
    ds.ConversionType = "SYN"
    ds.BodyPartExamined = "CHEST"
    ds.InstitutionName = row["site"]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)


# --------------------------------------------------------------------------- entry point


def _manifest_dict(dims: int, size: int, image_format: str, cfg: SyntheticConfig, seed: int, table) -> dict:
    per_class = table.groupby("diagnosis")["patient_id"].nunique()
    patients = int(table["patient_id"].nunique())
    folds = min(5, max(2, patients))  # tiny cohorts: fewer folds (each needs a patient)
    stratify = "diagnosis" if len(per_class) == 2 and per_class.min() >= folds else None
    scores = [{"name": f"score{j + 1}", "type": "continuous"} for j in range(cfg.n_scores)]
    return {
        "name": f"synthetic-{'brain-mri' if dims == 3 else 'chest-xray'}-{image_format}",
        "table": "participants.csv",
        "subject_column": "subject_id",
        "patient_column": "patient_id",
        "image": {"column": "image", "kind": f"{dims}d", "channels": 1},
        "preprocessing": {
            "orientation": "RAS" if dims == 3 else None,
            "spacing": None,
            "size": [size] * dims,
            "intensity": {"method": "zscore", "nonzero": dims == 3},
        },
        "attributes": [
            {"name": "age", "type": "continuous"},
            {"name": "sex", "type": "binary", "categories": ["F", "M"]},
            {
                "name": "site",
                "type": "categorical",
                "categories": [f"site{chr(ord('A') + k)}" for k in range(cfg.n_sites)],
            },
            *scores,
        ],
        "labels": [
            {"name": "diagnosis", "type": "binary", "positive": "disease"},
            {"name": "age", "type": "continuous"},
        ],
        "split": {
            "method": "group_kfold",
            "folds": folds,
            "seed": seed,
            "stratify": stratify,
            "val_folds": [0],
            "test_folds": [1] if patients >= 3 else [],
        },
    }


def generate_cohort(
    out_dir: str | os.PathLike,
    *,
    dims: int = 3,
    subjects: int = 500,
    size: int | None = None,
    seed: int = 0,
    image_format: ImageFormat | None = None,
    config: SyntheticConfig | None = None,
    overwrite: bool = False,
    **knobs: Any,
) -> Path:
    """Write a synthetic cohort (images, ``participants.csv``, ``manifest.yaml``) to ``out_dir``.

    Args:
        dims: 3 (brain-MRI-like NIfTI) or 2 (chest-X-ray-like PNG or DICOM).
        subjects: number of scans (table rows); some patients have two.
        size: image side in voxels (default 32 for 3D, 64 for 2D).
        image_format: "nifti" (3D, default), "png" (2D, default) or "dicom" (2D).
        config: effect strengths; ``knobs`` override single fields (e.g. ``disease_years=0``).
        overwrite: replace a non-empty ``out_dir`` (otherwise refused).

    The folder is written atomically (a temporary sibling renamed at the end).
    Returns the manifest path. Raises MedclInputError on a bad option or a non-empty ``out_dir``.
    """
    import yaml

    from medcl.data.manifest import parse_manifest

    if dims not in (2, 3):
        raise MedclInputError(f"dims must be 2 or 3, got {dims!r}")
    image_format = image_format or ("nifti" if dims == 3 else "png")
    allowed = ("nifti",) if dims == 3 else ("png", "dicom")
    if image_format not in allowed:
        raise MedclInputError(f"image_format for {dims}D must be one of {allowed}, got {image_format!r}")
    size = size or (32 if dims == 3 else 64)
    if size < 8 or subjects < 1:
        raise MedclInputError(f"need size >= 8 and subjects >= 1, got size={size}, subjects={subjects}")
    try:
        cfg = SyntheticConfig.model_validate({**(config or SyntheticConfig()).model_dump(), **knobs})
    except Exception as err:
        raise MedclInputError(f"invalid synthetic cohort setting: {err}") from None
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise MedclInputError(f"output folder {out} exists and is not empty (use overwrite / --force)")

    sites = _site_effects(cfg, dims, seed)
    table = _cohort_table(cfg, subjects, seed, sites)
    jitter_rng = np.random.default_rng([seed, 2])
    jitter = jitter_rng.normal(0, 0.02, table["patient_id"].nunique())
    patient_index = table["patient_id"].str[1:].astype(int).to_numpy() - 1
    ext = _EXTENSIONS[image_format]
    table["image"] = [f"images/{s}{ext}" for s in table["subject_id"]]
    coords = _grid(size, dims)
    spacing = (192.0 if dims == 3 else 400.0) / size
    site_index = table["site"].map(lambda s: ord(s[-1]) - ord("A")).to_numpy()

    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "images").mkdir()
        for i, row in enumerate(table.to_dict("records")):
            row["_jitter"] = jitter[patient_index[i]]
            anatomy = _brain(coords, row, cfg) if dims == 3 else _chest(coords, row, cfg)
            img = _acquire(anatomy, coords, int(site_index[i]), sites, np.random.default_rng([seed, 3, i]))
            path = tmp / row["image"]
            if image_format == "nifti":
                _write_nifti(path, img, spacing)
            elif image_format == "png":
                _write_png(path, img, cfg.bit_depth)
            else:
                _write_dicom(path, img, row, spacing, seed)
        columns = ["subject_id", "patient_id", "session", "image", "age", "sex", "site", "diagnosis"]
        columns += [f"score{j + 1}" for j in range(cfg.n_scores)] + ["severity", "brain_age"]
        table[columns].to_csv(tmp / "participants.csv", index=False, lineterminator="\n")
        spec = _manifest_dict(dims, size, image_format, cfg, seed, table)
        parse_manifest(spec, "synthetic manifest")  # a generator bug should fail here, not later
        header = (
            f"# Synthetic {dims}D cohort written by medcl.data.synthetic.generate_cohort\n"
            f"# subjects={subjects} size={size} seed={seed} format={image_format}\n"
            f"# generative settings: {cfg.model_dump_json()}\n"
        )
        (tmp / "manifest.yaml").write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return out / "manifest.yaml"
