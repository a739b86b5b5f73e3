"""Linear / kNN probes on frozen features: known answers, patient-level folds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from medcl.errors import MedclInputError
from medcl.evaluate.metrics import MetricSummary, write_probe_result
from medcl.evaluate.probe import _inner_splits, _subsample_patients, check_patient_folds, probe_features
from medcl.evaluate.probe_run import probe_run

FAST = {"Cs": (0.1, 1.0), "alphas": (0.1, 10.0), "inner_folds": 2}


def _patients(n_patients: int = 60, per_patient: int = 2) -> np.ndarray:
    return np.repeat([f"p{i:03d}" for i in range(n_patients)], per_patient)


def _separable(seed: int = 0, n_patients: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = _patients(n_patients)
    y = rng.integers(0, 2, n_patients)[np.unique(groups, return_inverse=True)[1]].astype(float)
    x = rng.normal(size=(len(y), 8))
    x[:, 0] += 6.0 * y  # the label is linearly separable along feature 0
    return x, y, groups


def test_separable_binary_label_gives_auc_near_one():
    x, y, groups = _separable()
    result = probe_features(x, y, groups, "binary", n_folds=4, **FAST)
    assert result.metric("roc_auc").mean > 0.99
    assert result.metric("balanced_accuracy").mean > 0.95
    assert result.n_folds == 4 and result.n_subjects == len(y)


def test_random_binary_label_gives_auc_near_half():
    x, _, groups = _separable()
    y = np.random.default_rng(1).integers(0, 2, len(groups)).astype(float)
    result = probe_features(x, y, groups, "binary", n_folds=4, **FAST)
    auc = result.metric("roc_auc")
    assert abs(auc.mean - 0.5) < 0.15
    assert auc.ci_low < 0.5 + 0.15


def test_multiclass_macro_ovr_auc_and_knn():
    rng = np.random.default_rng(0)
    groups = _patients(60)
    codes = rng.integers(0, 3, 60)[np.unique(groups, return_inverse=True)[1]]
    x = rng.normal(size=(len(codes), 6))
    x[np.arange(len(codes)), codes] += 5.0
    result = probe_features(x, codes.astype(float), groups, "multiclass", n_folds=3, knn=True, **FAST)
    assert result.metric("roc_auc").mean > 0.98
    assert result.metric("accuracy", probe="knn").mean > 0.8
    assert result.info["n_classes"] == 3


def test_continuous_label_ridge_mae_r2_and_missing_labels_dropped():
    rng = np.random.default_rng(0)
    groups = _patients(50)
    x = rng.normal(size=(100, 5))
    y = 3.0 * x[:, 1] + 0.1 * rng.normal(size=100)
    y[:7] = np.nan
    result = probe_features(x, y, groups, "continuous", n_folds=3, **FAST)
    assert result.metric("r2").mean > 0.95
    assert result.metric("mae").mean < 0.5
    assert result.info["n_dropped_missing_label"] == 7
    assert result.n_subjects == 93
    assert any("7 subject(s) without a label" in n for n in result.notes)


def test_label_efficiency_curve_uses_requested_patient_counts():
    x, y, groups = _separable()
    result = probe_features(x, y, groups, "binary", n_folds=3, train_sizes=[6, "all"], **FAST)
    small = result.metric("roc_auc", train_size=6)
    full = result.metric("roc_auc", train_size="all")
    rows = {(r["train_size"], r["metric"]): r for r in result.rows}
    assert rows[(6, "roc_auc")]["n_train"] == pytest.approx(12.0)  # 6 patients x 2 subjects
    assert small.n_folds == 3 and full.mean > 0.99


def test_outer_folds_never_split_a_patient():
    _x, y, groups = _separable(n_patients=30)
    from medcl.evaluate.probe import _outer_folds

    codes = np.unique(groups, return_inverse=True)[1]
    folds = _outer_folds(y.astype(int), codes, "binary", 5, seed=3)
    for patient in np.unique(codes):
        assert len(np.unique(folds[codes == patient])) == 1
    for tr, te in _inner_splits(y.astype(int), codes, "binary", 3, seed=0):
        assert not set(codes[tr]) & set(codes[te])


def test_given_folds_that_split_a_patient_are_refused():
    x, y, groups = _separable(n_patients=20)
    folds = np.arange(len(y)) % 4  # the two subjects of a patient land in different folds
    with pytest.raises(MedclInputError, match=r"split .* patient"):
        probe_features(x, y, groups, "binary", folds=folds, **FAST)
    with pytest.raises(MedclInputError):
        check_patient_folds(folds, groups)


def test_subsample_keeps_every_class_and_whole_patients():
    _x, y, groups = _separable(n_patients=40)
    codes = np.unique(groups, return_inverse=True)[1]
    idx = np.arange(len(y))
    sub = _subsample_patients(idx, y.astype(int), codes, "binary", 5, np.random.default_rng(0))
    assert len(np.unique(codes[sub])) == 5
    assert len(np.unique(y[sub])) == 2
    for p in np.unique(codes[sub]):  # both subjects of a chosen patient are kept
        assert (codes[sub] == p).sum() == (codes == p).sum()


@pytest.mark.parametrize(
    ("labels", "kind", "match"),
    [
        (np.zeros(40), "binary", "constant"),
        (np.full(40, np.nan), "binary", "no subject has a value"),
        (np.linspace(0, 1, 40), "binary", "class codes"),
        (np.ones(40), "continuous", "constant"),
    ],
)
def test_bad_labels_raise_clear_errors(labels, kind, match):
    x = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(MedclInputError, match=match):
        probe_features(x, labels, _patients(20), kind, **FAST)


def test_metric_summary_t_interval():
    s = MetricSummary.from_folds([0.6, 0.7, 0.8, float("nan")])
    assert s.n_folds == 3
    assert s.mean == pytest.approx(0.7)
    assert s.std == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, df=2)
    assert s.ci_low == pytest.approx(0.7 - half) and s.ci_high == pytest.approx(0.7 + half)


def test_results_written_as_json_and_csv(tmp_path):
    import json

    import pandas as pd

    x, y, groups = _separable(n_patients=30)
    result = probe_features(x, y, groups, "binary", n_folds=3, **FAST)
    json_path, csv_path = write_probe_result(result, tmp_path / "probe", "dx", encoder="test")
    data = json.loads(json_path.read_text())
    assert data["label"] == "dx" and data["encoder"] == "test" and data["kind"] == "binary"
    table = pd.read_csv(csv_path)
    assert set(table["metric"]) == {"roc_auc", "balanced_accuracy", "accuracy"}
    assert not list((tmp_path / "probe").glob(".*.tmp"))
    assert "roc_auc" in result.table()


# -- from a run directory, through the CLI ------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(synthetic_3d_manifest, tmp_path_factory):
    from downstream_helpers import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("probe") / "run", synthetic_3d_manifest)


def test_cli_probe_writes_results(run_dir, synthetic_3d_manifest, capsys):
    import json

    from medcl.cli import main

    args = ["probe", str(run_dir), "--manifest", str(synthetic_3d_manifest), "--label", "diagnosis"]
    assert main([*args, "--train-sizes", "6,all", "--knn", "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "roc_auc" in out and "knn" in out and "3 patient-level folds" in out
    data = json.loads((run_dir / "probe" / "diagnosis.json").read_text())
    assert data["n_folds"] == 3 and data["info"]["encoder"] == "pretrained"
    assert {r["train_size"] for r in data["rows"]} == {6, "all"}
    assert (run_dir / "probe" / "diagnosis.csv").is_file()
    assert main([*args, "--random-init"]) == 0
    random_init = json.loads((run_dir / "probe" / "random-init" / "diagnosis.json").read_text())
    assert random_init["info"]["encoder"] == "random-init" and random_init["encoder"] == "random-init"


def test_probe_run_continuous_label(run_dir, synthetic_3d_manifest):
    result = probe_run(run_dir, synthetic_3d_manifest, "age", n_folds=3, progress=False, write=False, **FAST)
    assert result.kind == "continuous"
    assert np.isfinite(result.metric("mae").mean)


def test_cli_probe_bad_inputs_exit_2(run_dir, synthetic_3d_manifest, tmp_path, capsys):
    import shutil

    import pandas as pd

    from medcl.cli import main

    base = ["probe", str(run_dir), "--manifest", str(synthetic_3d_manifest)]
    assert main([*base, "--label", "weight"]) == 2
    assert "no label 'weight'" in capsys.readouterr().err
    assert main([*base, "--label", "diagnosis", "--train-sizes", "ten"]) == 2
    assert "--train-sizes" in capsys.readouterr().err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["probe", str(empty), "--manifest", str(synthetic_3d_manifest), "--label", "diagnosis"]) == 2
    assert "no trained encoder" in capsys.readouterr().err
    # a label that is constant on the cohort
    cohort_dir = tmp_path / "cohort"
    shutil.copytree(synthetic_3d_manifest.parent, cohort_dir)
    table = pd.read_csv(cohort_dir / "participants.csv", dtype=str)
    table["diagnosis"] = "control"
    table.to_csv(cohort_dir / "participants.csv", index=False)
    constant = str(cohort_dir / "manifest.yaml")
    assert main(["probe", str(run_dir), "--manifest", constant, "--label", "diagnosis"]) == 2
    err = capsys.readouterr().err
    assert "diagnosis" in err and "one class" in err and "Traceback" not in err


# -- which subjects a probe scores ---------------------------------------------------------------


def _spy_encoded_indices(monkeypatch) -> list:
    """Record the cohort rows ``probe_run`` encodes (the only subjects it can score)."""
    import medcl.evaluate.features as features

    calls: list = []
    real = features.run_images

    def spy(run_dir, cohort, indices, cache=None):
        calls.append(np.asarray(indices))
        return real(run_dir, cohort, indices, cache)

    monkeypatch.setattr(features, "run_images", spy)
    return calls


def test_probe_never_scores_a_pretraining_subject_unless_asked(run_dir, synthetic_3d_manifest, monkeypatch):
    import pandas as pd

    from medcl.data.cohort import Cohort

    cohort = Cohort.from_manifest(synthetic_3d_manifest)
    ids = np.asarray(cohort.subject_ids, dtype=str)
    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    pretrained = set(split.loc[split["split"] == "train", "subject_id"])
    assert pretrained and pretrained < set(ids)
    labelled = np.isfinite(cohort.label("age"))

    calls = _spy_encoded_indices(monkeypatch)
    result = probe_run(run_dir, synthetic_3d_manifest, "age", n_folds=2, progress=False, write=False, **FAST)
    scored = set(ids[calls[-1]])
    assert scored.isdisjoint(pretrained)
    assert scored == {i for i, ok in zip(ids, labelled, strict=True) if ok and i not in pretrained}
    assert result.n_subjects == len(scored) and result.info["subjects"] == "outside"
    assert any("pretraining split were left out" in n for n in result.notes)

    everyone = probe_run(run_dir, synthetic_3d_manifest, "age", n_folds=2, progress=False, write=False,
                         subjects="all", **FAST)
    assert set(ids[calls[-1]]) >= pretrained and everyone.n_subjects == int(labelled.sum())
    assert any("pretrained this encoder" in n for n in everyone.notes)


def test_cli_probe_subjects_all_warns_and_a_missing_split_is_refused(run_dir, synthetic_3d_manifest, tmp_path,
                                                                     capsys):
    import shutil

    from medcl.cli import main

    args = ["--manifest", str(synthetic_3d_manifest), "--label", "age", "--folds", "2"]
    assert main(["probe", str(run_dir), *args, "--subjects", "all"]) == 0
    assert "warning: --subjects all" in capsys.readouterr().err
    assert main(["probe", str(run_dir), *args, "--subjects", "some"]) == 2
    assert "--subjects 'some'" in capsys.readouterr().err
    bare = tmp_path / "run_without_split"
    shutil.copytree(run_dir, bare)
    (bare / "split.csv").unlink()
    assert main(["probe", str(bare), *args]) == 2
    err = capsys.readouterr().err
    assert "split.csv missing" in err and "--subjects all" in err and "Traceback" not in err
