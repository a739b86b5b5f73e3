"""The synthetic cohort: valid files, determinism, and a generative story that holds numerically."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medcl.data.manifest import load_manifest
from medcl.data.synthetic import SyntheticConfig, _cohort_table, _site_effects, generate_cohort
from medcl.errors import MedclInputError


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _table(manifest: Path) -> pd.DataFrame:
    return pd.read_csv(manifest.parent / "participants.csv")


@pytest.mark.parametrize("dims,fmt", [(3, "nifti"), (2, "png"), (2, "dicom")])
def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, dims, fmt):
    a = generate_cohort(tmp_path / "a", dims=dims, subjects=6, size=12, seed=3, image_format=fmt)
    b = generate_cohort(tmp_path / "b", dims=dims, subjects=6, size=12, seed=3, image_format=fmt)
    c = generate_cohort(tmp_path / "c", dims=dims, subjects=6, size=12, seed=4, image_format=fmt)
    da, db, dc = _digests(a.parent), _digests(b.parent), _digests(c.parent)
    assert len(da) == 6 + 2
    assert da == db
    assert da["participants.csv"] != dc["participants.csv"]
    images = [k for k in da if k.startswith("images/")]
    assert all(da[k] != dc[k] for k in images)


def test_manifests_validate_and_match_the_table(synthetic_3d_manifest, synthetic_2d_manifest):
    cases = [(synthetic_3d_manifest, "3d", [16] * 3), (synthetic_2d_manifest, "2d", [32] * 2)]
    for path, kind, size in cases:
        m = load_manifest(path)
        assert m.image.kind == kind and m.preprocessing.size == size
        assert [a.name for a in m.attributes] == ["age", "sex", "site", "score1", "score2", "score3"]
        assert {lab.name for lab in m.labels} == {"diagnosis", "age"}
        table = _table(path)
        assert len(table) == 24
        assert all((path.parent / p).is_file() for p in table["image"])
        assert set(table["diagnosis"]) == {"control", "disease"}


def test_cohort_loads_with_patient_level_split(synthetic_3d_manifest):
    from medcl.data.cohort import Cohort

    cohort = Cohort.from_manifest(synthetic_3d_manifest)
    assert len(cohort) == 24
    split = pd.Series(cohort.split())
    patients = pd.Series(cohort.patient_ids)
    assert patients.nunique() < len(cohort)  # some patients have two sessions
    assert (split.groupby(patients).nunique() == 1).all()


def test_images_have_the_requested_geometry(
    synthetic_3d_manifest, synthetic_2d_manifest, synthetic_dicom_manifest
):
    import pydicom
    from pydicom.uid import SecondaryCaptureImageStorage

    nii = nib.load(synthetic_3d_manifest.parent / _table(synthetic_3d_manifest)["image"][0])
    assert nii.shape == (16, 16, 16)
    assert nib.aff2axcodes(nii.affine) == ("R", "A", "S")
    assert np.allclose(nii.header.get_zooms(), 12.0)  # 192 mm field of view / 16
    png = Image.open(synthetic_2d_manifest.parent / _table(synthetic_2d_manifest)["image"][0])
    assert png.size == (32, 32) and png.mode == "L"
    table = _table(synthetic_dicom_manifest)
    ds = pydicom.dcmread(synthetic_dicom_manifest.parent / table["image"][0])
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.pixel_array.shape == (32, 32) and ds.pixel_array.dtype == np.uint16
    assert ds.PatientID == table["patient_id"][0]


def test_png_16_bit(tmp_path):
    m = generate_cohort(tmp_path / "c", dims=2, subjects=2, size=16, bit_depth=16)
    arr = np.asarray(Image.open(m.parent / "images" / "s00001.png"))
    assert arr.dtype == np.uint16 and arr.max() > 255


def test_sessions_of_a_patient_share_everything_but_age(synthetic_3d_manifest):
    table = _table(synthetic_3d_manifest)
    twice = table.groupby("patient_id").filter(lambda g: len(g) == 2)
    assert len(twice) >= 2
    for _, g in twice.groupby("patient_id"):
        assert g[["sex", "site", "diagnosis"]].nunique().max() == 1
        assert g["age"].diff().iloc[1] == pytest.approx(2.0)


# ----------------------------------------------------------------------------- the story


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """60 scans at 16^3 with the default effects, plus region masks on the 16^3 grid."""
    path = generate_cohort(tmp_path_factory.mktemp("story"), subjects=60, size=16, seed=0)
    table = _table(path)
    images = np.stack([nib.load(path.parent / f).get_fdata(dtype=np.float32) for f in table["image"]])
    c = (np.arange(16) + 0.5) / 16 * 2 - 1
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    brain = (x / 0.5) ** 2 + (y / 0.6) ** 2 + (z / 0.5) ** 2 < 1
    reference = np.array([np.median(im[brain]) for im in images])  # tissue intensity per scan
    central = (abs(x) < 0.35) & (abs(y) < 0.45) & (abs(z) < 0.35)
    ventricles = np.array([(im[central] < 0.5 * r).mean() for im, r in zip(images, reference, strict=True)])
    lesion = (x - 0.38) ** 2 + (y + 0.15) ** 2 + (z + 0.2) ** 2 < 0.12**2
    lesion_intensity = np.array([im[lesion].mean() / r for im, r in zip(images, reference, strict=True)])
    return table, images, brain, ventricles, lesion_intensity


def test_ventricles_enlarge_with_age(story):
    table, _, _, ventricles, _ = story
    assert np.corrcoef(ventricles, table["age"])[0, 1] > 0.7


def test_diseased_subjects_look_older_than_their_age(story):
    table, _, _, ventricles, _ = story
    control = (table["diagnosis"] == "control").to_numpy()
    assert (table["brain_age"] - table["age"])[~control].mean() > 5
    slope, intercept = np.polyfit(table["age"][control], ventricles[control], 1)
    residual = ventricles - (slope * table["age"] + intercept)
    assert residual[~control].mean() > residual[control].mean() + 0.02


def test_lesion_darkens_a_fixed_place_in_diseased_subjects(story):
    table, _, _, _, lesion_intensity = story
    control = (table["diagnosis"] == "control").to_numpy()
    assert lesion_intensity[~control].mean() < 0.8 * lesion_intensity[control].mean()


def test_site_leaves_a_signature(story):
    table, images, brain, _, _ = story
    background_sd = pd.Series([im[:3, :3].std() for im in images]).groupby(table["site"]).mean()
    assert background_sd.max() > 2 * background_sd.min()
    brain_mean = pd.Series([im[brain].mean() for im in images]).groupby(table["site"]).mean()
    assert brain_mean.max() > 1.2 * brain_mean.min()


def test_scores_track_severity(story):
    table = story[0]
    corr = table[["score1", "score2", "score3"]].corrwith(table["severity"])
    assert corr["score1"] > 0.6 and corr["score2"] < -0.6 and corr["score3"] > 0.3


def test_knobs_switch_effects_off(tmp_path):
    path = generate_cohort(
        tmp_path / "c", subjects=8, size=12, disease_years=0, brain_age_noise=0, missing_fraction=0
    )
    table = _table(path)
    assert np.allclose(table["brain_age"], table["age"])
    assert not table[["score1", "score2", "score3"]].isna().any().any()
    assert "disease_years" in path.read_text()  # settings are recorded in the manifest header


def test_site_diagnosis_association_knob():
    big = 3000
    for strength, lo, hi in [(0.0, 0.0, 0.06), (1.0, 0.15, 1.0)]:
        cfg = SyntheticConfig(site_diagnosis_association=strength)
        table = _cohort_table(cfg, big, 0, _site_effects(cfg, 3, 0))
        prevalence = (table["diagnosis"] == "disease").groupby(table["site"]).mean()
        assert lo <= prevalence.max() - prevalence.min() <= hi


def test_missing_scores_are_written_as_empty_cells(tmp_path):
    path = generate_cohort(tmp_path / "c", subjects=30, size=8, missing_fraction=0.3)
    table = _table(path)
    assert 0 < table["score1"].isna().sum() < 30


@pytest.mark.parametrize(
    "kwargs,culprit",
    [
        ({"dims": 4}, "dims"),
        ({"dims": 3, "image_format": "png"}, "image_format"),
        ({"dims": 2, "image_format": "nifti"}, "image_format"),
        ({"prevalence": 1.5}, "prevalence"),
        ({"nonsense_knob": 1}, "nonsense_knob"),
    ],
)
def test_bad_options_name_the_culprit(tmp_path, kwargs, culprit):
    with pytest.raises(MedclInputError, match=culprit):
        generate_cohort(tmp_path / "c", subjects=2, size=8, **kwargs)
    assert not (tmp_path / "c").exists()


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MedclInputError, match="not empty"):
        generate_cohort(out, subjects=2, size=8)
    assert (out / "keep.txt").read_text() == "mine"
    generate_cohort(out, subjects=2, size=8, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.yaml").is_file()


def _medcl(argv: list[str]) -> int:
    """Run the ``medcl`` entry point in-process and return its exit code."""
    from medcl.cli import main

    try:
        return main(argv)
    except SystemExit as done:  # typer exits on its own after a command
        return int(done.code or 0)


def test_cli_synth_writes_a_cohort_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert _medcl(["synth", "--out", str(out), "--dims", "2", "--subjects", "5", "--size", "16"]) == 0
    assert "wrote 5 2D scans" in capsys.readouterr().out
    load_manifest(out / "manifest.yaml")
    assert _medcl(["synth", "--out", str(out), "--subjects", "5", "--size", "8"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _medcl(["synth", "--out", str(out), "--subjects", "5", "--size", "8", "--force"]) == 0
    assert load_manifest(out / "manifest.yaml").image.kind == "3d"
