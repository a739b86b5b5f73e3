"""``medcl validate``: every bad input gives exit 2, names the culprit, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cohort_factory import (
    basic_manifest,
    basic_rows,
    copy_into,
    pydicom_file,
    write_cohort,
    write_nifti,
)

from medcl.cli import main
from medcl.data.validate import validate_manifest
from medcl.errors import InputProblems

Case = Callable[[Path], tuple[Path, list[str]]]


def _rows_case(
    change: Callable[[list[dict], Path], None], *expected: str, manifest: dict | None = None
) -> Case:
    def build(root: Path) -> tuple[Path, list[str]]:
        rows = basic_rows()
        path = write_cohort(root, rows, manifest)
        change(rows, root)
        write_cohort(root, rows, manifest, images=False)
        return path, list(expected)

    return build


def _set(i: int, column: str, value: str) -> Callable[[list[dict], Path], None]:
    def change(rows: list[dict], root: Path) -> None:
        rows[i][column] = value

    return change


def _corrupt(rows, root):
    (root / "img" / "s01.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream at all" * 10)


def _truncated(rows, root):
    p = write_nifti(root / "img" / "s02.nii", shape=(20, 20, 20))
    p.write_bytes(p.read_bytes()[:2000])
    rows[2]["image"] = "img/s02.nii"


def _empty_dicom_dir(rows, root):
    (root / "img" / "dicom_s03").mkdir()
    rows[3]["image"] = "img/dicom_s03"


def _wrong_dims(rows, root):
    copy_into(pydicom_file("CT_small.dcm"), root / "img" / "slice.dcm")
    rows[4]["image"] = "img/slice.dcm"


def _mixed_series(rows, root):
    copy_into(
        pydicom_file("CT_small.dcm").parent / "dicomdirtests" / "98892003" / "MR2", root / "img" / "mr2"
    )
    rows[4]["image"] = "img/mr2"


def _all_missing(rows, root):
    for r in rows:
        r["age"] = ""


def _one_class(rows, root):
    for r in rows:
        r["dx"] = "CN"


def _patient_two_splits(rows, root):
    rows[1]["split"] = "val"


def _escape(rows, root):
    write_nifti(root.parent / "outside.nii.gz")
    rows[0]["image"] = "../outside.nii.gz"


def _table_file(content: bytes, name: str = "table.csv") -> Case:
    def build(root: Path) -> tuple[Path, list[str]]:
        path = write_cohort(root, manifest=basic_manifest(table=name))
        (root / name).write_bytes(content)
        return path, [name]

    return build


def _manifest_text(text: str, *expected: str) -> Case:
    def build(root: Path) -> tuple[Path, list[str]]:
        path = write_cohort(root)
        path.write_text(text)
        return path, [str(path), *expected]

    return build


def _embedding(write: Callable[[Path], None], *expected: str) -> Case:
    m = basic_manifest(attributes=[{"name": "emb", "type": "embedding", "features": "emb.csv"}])

    def build(root: Path) -> tuple[Path, list[str]]:
        path = write_cohort(root, manifest=m)
        write(root / "emb.csv")
        return path, ["emb.csv", *expected]

    return build


CASES: dict[str, Case] = {
    "missing image file": _rows_case(
        _set(0, "image", "img/nope.nii.gz"), "row 1", "nope.nii.gz", "does not exist"
    ),
    "corrupt image": _rows_case(_corrupt, "row 2", "s01.nii.gz", "corrupt"),
    "truncated image": _rows_case(_truncated, "row 3", "s02.nii", "truncated"),
    "empty DICOM folder": _rows_case(_empty_dicom_dir, "row 4", "dicom_s03", "empty DICOM folder"),
    "wrong dimensionality": _rows_case(_wrong_dims, "row 5", "slice.dcm", "2D image", "kind 3d"),
    "DICOM folder mixing series": _rows_case(_mixed_series, "row 5", "mr2", "mixes 3 DICOM series"),
    "missing column": _rows_case(
        lambda rows, root: None,
        "no column 'bmi'",
        "attribute 'bmi'",
        manifest=basic_manifest(attributes=[{"name": "bmi", "type": "continuous"}]),
    ),
    "duplicate id": _rows_case(_set(5, "subject_id", "s00"), "column 'subject_id'", "repeated in rows 1, 6"),
    "patient in two splits": _rows_case(_patient_two_splits, "column 'split'", "two splits", "row 2"),
    "bad split value": _rows_case(_set(2, "split", "training"), "column 'split'", "row 3", "'training'"),
    "text in continuous column": _rows_case(_set(6, "age", "sixty"), "column 'age'", "row 7", "'sixty'"),
    "unknown category": _rows_case(_set(7, "site", "Q"), "column 'site'", "row 8", "'Q'"),
    "all-missing attribute": _rows_case(_all_missing, "'age' is missing for every subject"),
    "label with one class": _rows_case(_one_class, "column 'dx'", "only one class"),
    "path escaping the root": _rows_case(_escape, "row 1", "outside.nii.gz", "outside the data root"),
    "empty table": _table_file(b"subject_id,patient_id,image\n", "table.csv"),
    "empty table file": _table_file(b"", "table.csv"),
    "unreadable table": _table_file(b"PAR1 not really parquet", "table.parquet"),
    "missing table": lambda root: (
        write_cohort(root, manifest=basic_manifest(table="nope.csv")),
        ["nope.csv"],
    ),
    "bad YAML": _manifest_text("table: [unclosed\n  image: {", "not valid YAML"),
    "schema error": _manifest_text(
        "table: table.csv\nimage: {kind: 4d}\npreprocessing: {size: [8, 8, 8]}\n", "image.kind"
    ),
    "missing feature file": _embedding(lambda p: None, "does not exist"),
    "non-numeric feature": _embedding(
        lambda p: p.write_text("subject_id,f0,f1\ns00,1,x\n"), "column 'f1'", "'x'"
    ),
}


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_names_culprit_writes_nothing(name, tmp_path, capsys):
    manifest, expected = CASES[name](tmp_path / "cohort")
    before = _listing(tmp_path)
    capsys.readouterr()
    code = main(["validate", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
    assert "Traceback" not in err
    assert _listing(tmp_path) == before


def test_every_problem_is_reported_at_once(tmp_path):
    rows = basic_rows()
    path = write_cohort(tmp_path, rows)
    rows[0]["image"] = "img/nope.nii.gz"
    rows[1]["age"] = "abc"
    rows[2]["site"] = "Z"
    rows[3]["split"] = "val"
    write_cohort(tmp_path, rows, images=False)
    with pytest.raises(InputProblems) as info:
        validate_manifest(path)
    assert len(info.value.problems) == 4
    joined = "\n".join(info.value.problems)
    for text in ("nope.nii.gz", "'abc'", "'Z'", "two splits"):
        assert text in joined


def test_many_bad_rows_are_capped(tmp_path):
    rows = basic_rows(20)
    for r in rows:
        r["age"] = "n.d."
    with pytest.raises(InputProblems) as info:
        validate_manifest(write_cohort(tmp_path, rows, images=False), check_images=False)
    assert "... and 15 more row(s)" in str(info.value)


def test_valid_cohort_prints_summary(tmp_path, capsys):
    path = write_cohort(tmp_path)
    before = _listing(tmp_path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "8 subjects, 4 patients" in out
    assert "train 4, val 2, test 2" in out
    assert "label dx (binary): CN 4, AD 4" in out
    assert "attribute age (continuous): range 40 .. 61" in out
    assert "s00" not in out and "p00" not in out
    assert _listing(tmp_path) == before
    summary = validate_manifest(path)
    assert summary["attributes"]["site"]["counts"] == {"C": 2, "B": 3, "A": 3}
    assert np.isclose(summary["attributes"]["sex"]["missing_rate"], 0.0)
