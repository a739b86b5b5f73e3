"""Centered kernel alignment between attribute kernels and a label, with permutation p-values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from medcl.errors import MedclInputError
from medcl.evaluate.attributes import (
    attribute_alignment,
    centered_kernel_alignment,
    cka_permutation_test,
    label_features,
    parse_combos,
)


def _delta(y: np.ndarray) -> np.ndarray:
    return (y[:, None] == y[None, :]).astype(float)


def _rbf(a: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return np.exp(-((a[:, None] - a[None, :]) ** 2) / (2 * sigma**2))


def test_cka_hand_computed_values():
    k = _rbf(np.random.default_rng(0).normal(size=30))
    assert centered_kernel_alignment(k, k) == pytest.approx(1.0)
    assert centered_kernel_alignment(k, 5 * k + 2) == pytest.approx(1.0)  # scale, constant shift
    # two-class delta kernels for y and its complement are the same kernel
    y = np.array([0, 0, 1, 1])
    assert centered_kernel_alignment(_delta(y), _delta(1 - y)) == pytest.approx(1.0)
    # y = [0,0,1,1] vs z = [0,1,0,1]: centred kernels are orthogonal
    z = np.array([0, 1, 0, 1])
    assert centered_kernel_alignment(_delta(y), _delta(z)) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(centered_kernel_alignment(np.ones((4, 4)), _delta(y)))


def test_label_features_reproduce_label_kernels():
    y = np.random.default_rng(0).normal(size=40)
    f = label_features(y, "continuous")
    sigma = np.median(np.abs(y[:, None] - y[None, :])[np.triu_indices(40, 1)])
    np.testing.assert_allclose(f @ f.T, _rbf(y, sigma), atol=1e-4)
    codes = np.array([0, 2, 1, 2, 0.0])
    f = label_features(codes, "multiclass")
    np.testing.assert_array_equal(f @ f.T, _delta(codes))


def test_attribute_equal_to_label_aligns_and_noise_does_not():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    cka, p = cka_permutation_test(_delta(y), y, "binary", permutations=200, seed=0)
    assert cka == pytest.approx(1.0)
    assert p == pytest.approx(1 / 201)
    # unrelated attributes: CKA near 0 and p-values spread uniformly (rarely "significant")
    results = [
        cka_permutation_test(_rbf(rng.normal(size=300)), y, "binary", permutations=200, seed=s)
        for s in range(20)
    ]
    ckas, ps = np.array(results).T
    assert ckas.max() < 0.05
    assert 0.3 < ps.mean() < 0.7
    assert (ps < 0.05).sum() <= 3


def test_continuous_label_alignment_and_p_value_matches_brute_force():
    rng = np.random.default_rng(1)
    age = rng.uniform(20, 90, 60)
    k = _rbf(age, 15.0)
    cka, p = cka_permutation_test(k, age, "continuous", permutations=100, seed=0)
    assert cka > 0.9 and p < 0.02
    # brute force: permute the label kernel explicitly
    f = label_features(age, "continuous")
    lk = f @ f.T
    gen = np.random.default_rng(0)
    perms = np.argsort(gen.random((100, 60)), axis=1)
    noise = _rbf(rng.normal(size=60))
    observed, p_fast = cka_permutation_test(noise, age, "continuous", permutations=100, seed=0)
    brute = [centered_kernel_alignment(noise, lk[q][:, q]) for q in perms]
    assert observed == pytest.approx(centered_kernel_alignment(noise, lk), abs=1e-6)
    assert p_fast == pytest.approx((1 + sum(b >= observed - 1e-12 for b in brute)) / 101)


def test_permutation_test_is_seeded():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 80).astype(float)
    k = _rbf(rng.normal(size=80))
    assert cka_permutation_test(k, y, "multiclass", permutations=50, seed=4) == cka_permutation_test(
        k, y, "multiclass", permutations=50, seed=4
    )


def _write_cohort(folder, n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    dx = rng.choice(["CN", "AD"], n)
    dx[rng.random(n) < 0.1] = ""  # a few missing labels
    table = pd.DataFrame(
        {
            "subject_id": [f"s{i:03d}" for i in range(n)],
            "patient_id": [f"p{i:03d}" for i in range(n)],
            "image": [f"img/s{i:03d}.nii.gz" for i in range(n)],
            "dx": dx,
            "dx_copy": np.where(dx == "", "CN", dx),
            "noise": rng.normal(size=n).round(4),
        }
    )
    table.to_csv(folder / "t.csv", index=False)
    manifest = {
        "table": "t.csv",
        "image": {"kind": "3d"},
        "preprocessing": {"size": [8, 8, 8]},
        "attributes": [
            {"name": "dx_copy", "type": "categorical", "categories": ["CN", "AD"]},
            {"name": "noise", "type": "continuous"},
        ],
        "labels": [{"name": "dx", "type": "binary", "positive": "AD"}],
    }
    (folder / "m.yaml").write_text(yaml.safe_dump(manifest))
    return folder / "m.yaml"


def test_attribute_alignment_on_a_cohort(tmp_path):
    from medcl.data.cohort import Cohort

    cohort = Cohort.from_manifest(_write_cohort(tmp_path), check_files=False)
    report = attribute_alignment(cohort, "dx", combos=["dx_copy+noise"], permutations=200)
    by_name = {r.name: r for r in report.rows}
    assert by_name["dx_copy"].cka == pytest.approx(1.0)
    assert by_name["dx_copy"].p_value < 0.01
    assert by_name["noise"].cka < 0.1 and by_name["noise"].p_value > 0.05
    assert 0 < by_name["dx_copy+noise"].cka < 1
    assert next(r.name for r in report.rows) == "dx_copy"  # sorted, best first
    assert report.n_used == report.n_labelled < 60
    assert any("without label" in n for n in report.notes)
    text = report.table()
    assert "dx_copy" in text and "p-value" in text
    assert "s001" not in str(report.to_dict())


def test_attribute_alignment_uses_only_the_training_split_by_default(tmp_path):
    from medcl.data.cohort import Cohort

    manifest = _write_cohort(tmp_path)
    cohort = Cohort.from_manifest(manifest, check_files=False)
    split, labelled = cohort.split(), np.isfinite(cohort.label("dx"))
    report = attribute_alignment(cohort, "dx", permutations=10)
    assert report.n_used == (labelled & (split == "train")).sum() < labelled.sum()
    assert attribute_alignment(cohort, "dx", permutations=10, split=None).n_used == labelled.sum()
    # the held-out subjects' values play no part: change them and nothing moves
    table = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    table.loc[split != "train", "noise"] = "1000"
    table.to_csv(tmp_path / "t.csv", index=False)
    changed = Cohort.from_manifest(manifest, check_files=False)
    assert (changed.split() == split).all()
    again = attribute_alignment(changed, "dx", permutations=10)
    assert [(r.name, r.cka, r.p_value) for r in again.rows] == [(r.name, r.cka, r.p_value) for r in report.rows]
    assert attribute_alignment(changed, "dx", permutations=10, split=None).rows != report.rows


def test_attribute_alignment_subsamples_large_cohorts(tmp_path):
    from medcl.data.cohort import Cohort

    cohort = Cohort.from_manifest(_write_cohort(tmp_path, n=80), check_files=False)
    report = attribute_alignment(cohort, "dx", permutations=10, max_subjects=30)
    assert report.n_used == 30
    assert any("subsampled 30" in n for n in report.notes)


def test_bad_combo_and_label_names(tmp_path):
    from medcl.data.cohort import Cohort

    cohort = Cohort.from_manifest(_write_cohort(tmp_path), check_files=False)
    with pytest.raises(MedclInputError, match="unknown attribute"):
        parse_combos(["dx_copy+weight"], cohort.attribute_names)
    with pytest.raises(MedclInputError, match="no label 'age'"):
        attribute_alignment(cohort, "age", permutations=10)


def test_cli_attributes_prints_sorted_table_and_writes_json(tmp_path, capsys):
    import json

    from medcl.cli import main

    manifest = _write_cohort(tmp_path)
    out = tmp_path / "align.json"
    args = ["attributes", "--manifest", str(manifest), "--label", "dx", "--combo", "dx_copy+noise"]
    assert main([*args, "--permutations", "99", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = [ln.split()[0] for ln in printed.splitlines()[3:6]]
    assert lines[0] == "dx_copy" and set(lines) == {"dx_copy", "noise", "dx_copy+noise"}
    data = json.loads(out.read_text())
    assert data["permutations"] == 99 and data["rows"][0]["name"] == "dx_copy"


def test_cli_attributes_bad_input_exits_2(tmp_path, capsys):
    from medcl.cli import main

    manifest = _write_cohort(tmp_path)
    assert main(["attributes", "--manifest", str(manifest), "--label", "nope"]) == 2
    assert "no label 'nope'" in capsys.readouterr().err
    assert main(["attributes", "--manifest", str(manifest), "--label", "dx", "--combo", "dx_copy+bmi"]) == 2
    assert "bmi" in capsys.readouterr().err
