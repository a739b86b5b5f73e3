"""Cohort.from_manifest: table join, attributes, labels, splits, summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from cohort_factory import (
    basic_manifest,
    basic_rows,
    copy_into,
    pydicom_file,
    pydicom_series_folder,
    write_cohort,
)

from medcl.data import Cohort, load_manifest
from medcl.errors import InputProblems


@pytest.fixture
def cohort(tmp_path):
    return Cohort.from_manifest(write_cohort(tmp_path))


def test_ids_paths_and_len(cohort, tmp_path):
    assert len(cohort) == 8
    assert cohort.subject_ids[:3] == ["s00", "s01", "s02"]
    assert cohort.patient_ids[:4] == ["p00", "p00", "p01", "p01"]
    assert cohort.image_paths[0] == (tmp_path / "img" / "s00.nii.gz").resolve()
    assert list(cohort.table["subject_id"]) == cohort.subject_ids


def test_attribute_matrix_codes_and_terms(cohort):
    from medcl.kernels import KernelTerm, PriorKernel

    values, missing, terms = cohort.attribute_matrix()
    assert values.dtype == np.float32 and values.shape == (8, 3)
    assert not missing.any()
    np.testing.assert_array_equal(values[:, 0], 40 + 3 * np.arange(8))
    # binary without categories: sorted observed values F=0, M=1
    assert cohort.attribute_categories("sex") == ["F", "M"]
    np.testing.assert_array_equal(values[:, 1], [1, 1, 0, 0, 1, 1, 0, 0])
    # categories given in the manifest fix the code order (C=0, B=1, A=2)
    np.testing.assert_array_equal(values[:4, 2], [2, 1, 0, 2])
    assert terms == [
        KernelTerm("age", "rbf", 0, 1, bandwidth=None, weight=1.0),
        KernelTerm("sex", "delta", 1, 2, bandwidth=None, weight=1.0),
        KernelTerm("site", "delta", 2, 3, bandwidth=None, weight=1.0),
    ]
    sub_values, _, sub_terms = cohort.attribute_matrix(["site", "age"])
    assert [(t.name, t.start, t.stop) for t in sub_terms] == [("site", 0, 1), ("age", 1, 2)]
    np.testing.assert_array_equal(sub_values[:, 1], values[:, 0])
    kernel = cohort.prior_kernel(["age"])
    assert isinstance(kernel, PriorKernel)


def test_missing_values_and_numeric_category_order(tmp_path):
    rows = basic_rows()
    rows[2]["age"] = ""
    rows[3]["site"] = ""
    for i, r in enumerate(rows):
        r["grade"] = ["10", "9", "2"][i % 3]  # numeric-looking categories sort as numbers
    m = basic_manifest(
        attributes=[
            {"name": "age", "type": "continuous"},
            {"name": "site", "type": "categorical"},
            {"name": "grade", "type": "categorical"},
        ]
    )
    c = Cohort.from_manifest(write_cohort(tmp_path, rows, m))
    values, missing, _ = c.attribute_matrix()
    assert np.isnan(values[2, 0]) and missing[2, 0] and not missing[2, 1]
    assert missing[3, 1] and np.isnan(values[3, 1])
    assert c.attribute_categories("grade") == ["2", "9", "10"]
    assert c.summary()["attributes"]["age"]["missing_rate"] == pytest.approx(1 / 8)


@pytest.mark.parametrize("fmt", ["csv", "npz", "parquet"])
def test_embedding_attribute(tmp_path, fmt):
    ids = [f"s{i:02d}" for i in range(8) if i != 5]  # s05 has no embedding
    feats = np.arange(len(ids) * 3, dtype=np.float32).reshape(-1, 3)
    if fmt == "npz":
        np.savez(tmp_path / "emb.npz", ids=np.array(ids), features=feats)
    else:
        df = pd.DataFrame(feats, columns=["f0", "f1", "f2"])
        df.insert(0, "subject_id", ids)
        df = df.iloc[::-1]  # order of the feature file does not matter
        df.to_csv(tmp_path / "emb.csv", index=False) if fmt == "csv" else df.to_parquet(
            tmp_path / "emb.parquet"
        )
    m = basic_manifest(
        attributes=[
            {"name": "age", "type": "continuous"},
            {"name": "emb", "type": "embedding", "features": f"emb.{fmt}"},
        ]
    )
    c = Cohort.from_manifest(write_cohort(tmp_path, manifest=m))
    values, missing, terms = c.attribute_matrix()
    assert values.shape == (8, 4)
    assert [(t.name, t.kind, t.start, t.stop) for t in terms] == [
        ("age", "rbf", 0, 1),
        ("emb", "cosine", 1, 4),
    ]
    np.testing.assert_array_equal(values[0, 1:], [0, 1, 2])
    np.testing.assert_array_equal(values[6, 1:], feats[5])
    assert missing[5, 1:].all() and not missing[5, 0] and np.isnan(values[5, 1:]).all()
    assert not missing[np.arange(8) != 5].any()


def test_labels(cohort, tmp_path):
    np.testing.assert_array_equal(cohort.label("dx"), [0, 0, 1, 1, 0, 0, 1, 1])
    assert cohort.label_classes("dx") == ["CN", "AD"]
    np.testing.assert_array_equal(cohort.label("score"), 10 + np.arange(8))
    assert cohort.label_classes("score") is None
    rows = basic_rows()
    rows[0]["dx"] = ""
    for i, r in enumerate(rows):
        r["stage"] = ["mild", "none", "severe"][i % 3]
    m = basic_manifest(labels=[{"name": "dx", "type": "binary"}, {"name": "stage", "type": "multiclass"}])
    c = Cohort.from_manifest(write_cohort(tmp_path / "b", rows, m))
    assert c.label_classes("dx") == ["AD", "CN"]  # no positive: sorted, the second is 1
    assert np.isnan(c.label("dx")[0]) and c.label("dx")[2] == 0
    assert c.label_classes("stage") == ["mild", "none", "severe"]
    np.testing.assert_array_equal(c.label("stage")[:3], [0, 1, 2])


def test_split_column_and_folds(cohort):
    split = cohort.split()
    assert list(split) == ["train"] * 4 + ["val", "val", "test", "test"]
    np.testing.assert_array_equal(cohort.indices("val"), [4, 5])
    folds = cohort.folds(k=4, seed=3)
    assert sorted(set(folds)) == [0, 1, 2, 3]
    assert all(folds[2 * p] == folds[2 * p + 1] for p in range(4))  # patient-level
    np.testing.assert_array_equal(folds, cohort.folds(k=4, seed=3))  # deterministic


def test_group_kfold_split_is_patient_level_and_stratified(tmp_path):
    rows = basic_rows(40)
    m = basic_manifest(
        split={
            "method": "group_kfold",
            "folds": 5,
            "seed": 1,
            "stratify": "dx",
            "val_folds": [0],
            "test_folds": [1],
        }
    )
    c = Cohort.from_manifest(write_cohort(tmp_path, rows, m, images=False), check_files=False)
    split = c.split()
    assert {s: int((split == s).sum()) for s in ("train", "val", "test")} == {
        "train": 24,
        "val": 8,
        "test": 8,
    }
    for p in set(c.patient_ids):
        assert len({split[i] for i, q in enumerate(c.patient_ids) if q == p}) == 1
    dx = c.label("dx")
    for s in ("train", "val", "test"):
        assert dx[split == s].mean() == pytest.approx(0.5)


def test_summary_has_counts_and_no_ids(cohort):
    s = cohort.summary()
    assert (s["subjects"], s["patients"]) == (8, 4)
    assert s["splits"] == {"train": 4, "val": 2, "test": 2}
    assert s["labels"]["dx"]["counts"] == {"CN": 4, "AD": 4}
    assert s["attributes"]["age"]["min"] == 40 and s["attributes"]["age"]["max"] == 61
    text = json.dumps(s)
    assert not any(i in text for i in cohort.subject_ids + cohort.patient_ids)


def test_accessors_do_not_expose_internal_state(cohort):
    cohort.label("dx")[:] = 7
    cohort.subject_ids.append("x")
    values, _, _ = cohort.attribute_matrix()
    values[:] = 0
    assert cohort.label("dx")[0] == 0 and len(cohort.subject_ids) == 8
    assert cohort.attribute_matrix()[0][0, 0] == 40


@pytest.mark.parametrize("suffix", ["tsv", "parquet"])
def test_tsv_and_parquet_tables(tmp_path, suffix):
    path = write_cohort(tmp_path, manifest=basic_manifest(table=f"table.{suffix}"))
    df = pd.read_csv(tmp_path / "table.csv", dtype=str)
    if suffix == "tsv":
        df.to_csv(tmp_path / "table.tsv", sep="\t", index=False)
    else:
        df["age"] = df["age"].astype(float)  # typed parquet columns parse too
        df.to_parquet(tmp_path / "table.parquet")
    c = Cohort.from_manifest(path)
    assert c.attribute_matrix(["age"])[0][3, 0] == 49


def test_from_manifest_reports_every_problem(tmp_path):
    rows = basic_rows()
    rows[1]["age"] = "old"
    rows[2]["site"] = "Z"
    rows[3]["subject_id"] = "s00"
    with pytest.raises(InputProblems) as info:
        Cohort.from_manifest(write_cohort(tmp_path, rows))
    text = str(info.value)
    assert len(info.value.problems) == 3
    assert "row 2" in text and "'age'" in text and "'old'" in text
    assert "row 3" in text and "'site'" in text and "'Z'" in text
    assert "repeated in rows 1, 4" in text


def test_real_dicom_2d_through_manifest_and_reader(tmp_path):
    """pydicom's CT_small.dcm and MR_small.dcm (2D), loaded through the manifest with MONAI."""
    from medcl.data.readers import load_image_transform

    copy_into(pydicom_file("CT_small.dcm"), tmp_path / "dcm" / "ct.dcm")
    copy_into(pydicom_file("MR_small.dcm"), tmp_path / "dcm" / "mr.dcm")
    rows = [
        {"subject_id": "a", "image": "dcm/ct.dcm", "age": "30", "split": "train"},
        {"subject_id": "b", "image": "dcm/mr.dcm", "age": "40", "split": "val"},
    ]
    m = basic_manifest(
        image={"kind": "2d"},
        preprocessing={"size": [32, 32]},
        patient_column=None,
        attributes=[{"name": "age", "type": "continuous"}],
        labels=[],
    )
    c = Cohort.from_manifest(write_cohort(tmp_path, rows, m))
    assert c.patient_ids == c.subject_ids  # patient defaults to subject
    load = load_image_transform("image")
    shapes = [tuple(load({"image": str(p)})["image"].shape) for p in c.image_paths]
    assert shapes == [(1, 128, 128), (1, 64, 64)]


def test_real_nifti_and_dicom_series_3d_through_manifest(tmp_path):
    """nibabel's anatomical.nii and a pydicom CT series folder (3D), one LoadImaged for both."""
    import nibabel.testing

    from medcl.data.readers import load_image_transform

    copy_into(nibabel.testing.data_path / "anatomical.nii", tmp_path / "data" / "anat.nii")
    copy_into(pydicom_series_folder(), tmp_path / "data" / "ct_series")
    rows = [
        {"subject_id": "a", "patient_id": "p", "image": "data/anat.nii", "split": "train"},
        {"subject_id": "b", "patient_id": "q", "image": "data/ct_series", "split": "test"},
    ]
    m = basic_manifest(attributes=[], labels=[])
    c = Cohort.from_manifest(write_cohort(tmp_path, rows, m))
    load = load_image_transform("image")
    shapes = [tuple(load({"image": str(p)})["image"].shape) for p in c.image_paths]
    assert shapes == [(1, 33, 41, 25), (1, 16, 16, 5)]


def test_loaded_manifest_object_is_accepted(tmp_path):
    m = load_manifest(write_cohort(tmp_path))
    assert len(Cohort.from_manifest(m)) == 8
    assert yaml.safe_load(m.to_yaml())["table"] == "table.csv"
