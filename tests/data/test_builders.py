"""Manifest builders on a fake BIDS tree and on pydicom's DICOM test files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml
from cohort_factory import copy_into, pydicom_file, write_nifti

from medcl.cli import main
from medcl.data import Cohort
from medcl.data.builders import SALT_NAME, parse_dicom_age, pseudonymize
from medcl.data.validate import validate_manifest


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def bids(tmp_path) -> Path:
    root = tmp_path / "bids"
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(1, 7)],
            "age": [23, 31, "n/a", 45, 52, 67],
            "sex": ["M", "F", "F", "M", "F", "M"],
            "site": ["A", "B", "A", "B", "A", "B"],
            "group": ["control", "patient"] * 3,
            "notes": [f"free text {i}" for i in range(6)],
        }
    )
    root.mkdir()
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    for i in range(1, 7):
        sessions = ["ses-1", "ses-2"] if i == 1 else [None]
        for ses in sessions:
            folder = root / f"sub-{i:02d}" / (ses or "") / "anat"
            name = f"sub-{i:02d}_{ses}_T1w.nii.gz" if ses else f"sub-{i:02d}_T1w.nii.gz"
            write_nifti(folder / name, seed=i)
    write_nifti(root / "sub-02" / "anat" / "sub-02_T2w.nii.gz")  # not a T1w: ignored
    (root / "dataset_description.json").write_text("{}")
    return root


def test_from_bids(bids, tmp_path, capsys):
    before = _listing(bids)
    out = tmp_path / "out"
    assert main(["manifest", "from-bids", str(bids), "--out", str(out)]) == 0
    assert _listing(bids) == before  # input untouched
    assert "7 rows" in capsys.readouterr().out
    table = pd.read_csv(out / "table.csv", dtype=str)
    assert len(table) == 7 and table["subject_id"].is_unique
    assert list(table.loc[table["patient_id"] == "sub-01", "session"]) == ["ses-1", "ses-2"]
    m = yaml.safe_load((out / "manifest.yaml").read_text())
    types = {a["name"]: a["type"] for a in m["attributes"]}
    assert types == {"age": "continuous", "sex": "binary", "site": "categorical"}
    # age is also a label (the quickstart probes `--label age`); a test fold for `medcl finetune`
    assert m["labels"] == [{"name": "age", "type": "continuous"}, {"name": "group", "type": "binary"}]
    assert (m["split"]["folds"], m["split"]["val_folds"], m["split"]["test_folds"]) == (5, [0], [1])
    cohort = Cohort.from_manifest(out / "manifest.yaml")
    assert len(set(cohort.patient_ids)) == 6
    split = cohort.split()
    assert split[0] == split[1]  # both sessions of sub-01 on the same side
    assert {"train", "val", "test"} <= set(split)
    assert validate_manifest(out / "manifest.yaml")["subjects"] == 7
    assert main(["manifest", "from-bids", str(bids), "--out", str(out)]) == 2  # exists: needs --force
    assert "--force" in capsys.readouterr().err


def test_from_bids_refuses_output_inside_input_and_non_bids(bids, tmp_path, capsys):
    assert main(["manifest", "from-bids", str(bids), "--out", str(bids / "derivatives")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (bids / "derivatives").exists()
    (tmp_path / "plain").mkdir()
    assert main(["manifest", "from-bids", str(tmp_path / "plain"), "--out", str(tmp_path / "o")]) == 2
    assert "T1w" in capsys.readouterr().err


def test_from_dicom(tmp_path, capsys):
    tests_dir = pydicom_file("CT_small.dcm").parent / "dicomdirtests"
    src = tmp_path / "pacs"
    for part in ("98892001", "77654033", "98892003"):
        copy_into(tests_dir / part, src / part)
    copy_into(pydicom_file("CT_small.dcm"), src / "loose" / "ct.dcm")
    (src / "README.txt").write_text("not dicom")
    before = _listing(src)
    out = tmp_path / "out"
    assert (
        main(["manifest", "from-dicom", str(src), "--out", str(out), "--salt", "s3cret", "--kind", "3d"]) == 0
    )
    assert _listing(src) == before
    printed = capsys.readouterr().out
    assert "MR2: a 3-file series shares its folder" in printed
    table = pd.read_csv(out / "table.csv", dtype=str)
    images = sorted(Path(p).name for p in table["image"])
    assert images == ["CT2", "CT2N", "CT5N", "MR700"]  # series folders; 2D single files skipped (3d)
    assert set(table["age"].astype(float)) == {42.0, 43.0, 45.0}
    raw_ids = {"77654033", "98890234"}  # PatientIDs; 98892001 and 98892003 are two studies of one patient
    assert not raw_ids & set(table["patient_id"]) and all(p.startswith("p") for p in table["patient_id"])
    assert set(table["patient_id"]) == {pseudonymize(p, "s3cret") for p in raw_ids}
    m = yaml.safe_load((out / "manifest.yaml").read_text())
    assert m["image"]["kind"] == "3d" and m["split"]["folds"] == 2
    assert m["split"]["test_folds"] == []  # two patients: train and validation only
    assert {"name": "age", "type": "continuous"} in m["labels"]
    summary = validate_manifest(out / "manifest.yaml")
    assert (summary["subjects"], summary["patients"]) == (4, 2)


def test_from_dicom_without_salt_makes_keeps_and_reuses_a_private_cohort_salt(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDCL_PSEUDONYM_SALT", raising=False)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        copy_into(pydicom_file(name), tmp_path / "in" / name)
    out = tmp_path / "out"
    assert main(["manifest", "from-dicom", str(tmp_path / "in"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    salt_file = out / SALT_NAME
    assert f"generated a random pseudonym salt in {salt_file}" in printed
    assert salt_file.stat().st_mode & 0o777 == 0o600  # owner-only
    salt = salt_file.read_text().strip()
    assert len(salt) == 64 and salt not in printed  # 256 random bits, never printed
    table = pd.read_csv(out / "table.csv", dtype=str)
    raw = {str(pydicom.dcmread(pydicom_file(n), stop_before_pixels=True).PatientID)
           for n in ("CT_small.dcm", "MR_small.dcm")}
    assert set(table["patient_id"]) == {pseudonymize(p, salt) for p in raw}
    assert not set(table["patient_id"]) & {pseudonymize(p) for p in raw}  # not the unsalted hash
    # a rebuild reuses the salt (same pseudonyms) and says so
    assert main(["manifest", "from-dicom", str(tmp_path / "in"), "--out", str(out), "--force"]) == 0
    assert "reused" in capsys.readouterr().out and salt_file.read_text().strip() == salt
    assert pd.read_csv(out / "table.csv", dtype=str)["patient_id"].tolist() == table["patient_id"].tolist()
    # another cohort folder gets another salt; an explicit salt (here from the environment) wins
    monkeypatch.setenv("MEDCL_PSEUDONYM_SALT", "from-env")
    assert main(["manifest", "from-dicom", str(tmp_path / "in"), "--out", str(tmp_path / "o2")]) == 0
    assert not (tmp_path / "o2" / SALT_NAME).exists()
    assert set(pd.read_csv(tmp_path / "o2" / "table.csv", dtype=str)["patient_id"]) == {
        pseudonymize(p, "from-env") for p in raw}


@pytest.mark.parametrize(("mode", "column", "expected"), [
    ("year", "study_year", {"2004"}), ("offset", "study_day", {"0"}), ("full", "study_date", None)])
def test_from_dicom_study_date_keeps_the_year_unless_asked(tmp_path, mode, column, expected):
    names = ("CT_small.dcm", "MR_small.dcm")
    for name in names:
        copy_into(pydicom_file(name), tmp_path / "in" / name)
    raw = {str(pydicom.dcmread(pydicom_file(n), stop_before_pixels=True).StudyDate) for n in names}
    args = ["manifest", "from-dicom", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--salt", "x"]
    assert main([*args, "--study-date", mode]) == 0
    table = pd.read_csv(tmp_path / "o" / "table.csv", dtype=str)
    others = {"study_year", "study_day", "study_date"} - {column}
    assert column in table and not others & set(table.columns)
    assert set(table[column]) == (raw if expected is None else expected)
    if mode != "full":
        text = (tmp_path / "o" / "table.csv").read_text() + (tmp_path / "o" / "manifest.yaml").read_text()
        assert not any(d in text for d in raw)


def test_from_dicom_2d(tmp_path):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        copy_into(pydicom_file(name), tmp_path / "in" / name)
    main(["manifest", "from-dicom", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    summary = validate_manifest(tmp_path / "out" / "manifest.yaml")
    assert summary["image_kind"] == "2d" and summary["subjects"] == 2


@pytest.mark.parametrize(
    ("text", "years"),
    [("045Y", 45), ("006M", 0.5), ("002W", 0.0383), ("010D", 0.0274), ("", None), ("45", None)],
)
def test_parse_dicom_age(text, years):
    assert parse_dicom_age(text) == (None if years is None else pytest.approx(years, abs=1e-3))


def test_pseudonym_is_stable_and_salted():
    assert pseudonymize("123") == pseudonymize("123") != pseudonymize("123", "salt")
    assert "123" not in pseudonymize("123") and len(pseudonymize("123")) == 17
