"""Test metrics of a diagnosis model: hand-computed cases, and the patient-level bootstrap's behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medcl.evaluate.diagnosis_metrics import (
    calibration_table,
    diagnosis_metrics,
    patient_bootstrap,
    point_metrics,
    youden_threshold,
)


def test_youden_threshold_hand_case_takes_the_highest_of_tied_thresholds():
    # thresholds .8: J = .5 - 0; .4: .5 - .5; .35: 1 - .5; .1: 1 - 1  -> .8 and .35 tie, .8 is kept
    threshold, note = youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert threshold == pytest.approx(0.8) and note is None
    threshold, note = youden_threshold(np.array([1, 1, 1]), np.array([0.2, 0.3, 0.9]))
    assert threshold == 0.5 and "single class" in note


def test_binary_metrics_at_a_threshold_by_hand():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.3, 0.7, 0.4])
    m = point_metrics("binary", y, np.stack([1 - p, p], axis=1), threshold=0.5)
    assert m["sensitivity"] == pytest.approx(1 / 2) and m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    low = point_metrics("binary", y, np.stack([1 - p, p], axis=1), threshold=0.25)
    assert low["sensitivity"] == 1.0 and low["specificity"] == pytest.approx(1 / 3)


def test_calibration_table_and_ece_by_hand():
    table = calibration_table(np.array([0, 1, 0, 1]), np.array([0.05, 0.15, 0.15, 0.95]))
    filled = [b for b in table["bins"] if b["n"]]
    assert [(b["n"], b["observed"]) for b in filled] == [(1, 0.0), (2, 0.5), (1, 1.0)]
    # ECE = 1/4 * .05 + 2/4 * .35 + 1/4 * .05
    assert table["ece"] == pytest.approx(0.2)
    assert len(table["bins"]) == 10


def _calibrated_sample(n_patients: int, seed: int):
    rng = np.random.default_rng(seed)
    p = np.repeat(rng.uniform(0.05, 0.95, n_patients), 2)  # two scans per patient
    y = (rng.uniform(size=p.size) < p).astype(float)
    groups = np.repeat([f"p{k}" for k in range(n_patients)], 2)
    return y, np.stack([1 - p, p], axis=1), groups


def test_bootstrap_interval_contains_the_value_and_narrows_with_more_patients():
    widths = {}
    for n in (40, 400):
        y, out, groups = _calibrated_sample(n, seed=1)
        result = diagnosis_metrics("binary", y, out, groups, threshold=0.5, n_boot=300, seed=0)
        for name, entry in result["metrics"].items():
            assert entry["low"] <= entry["value"] <= entry["high"], (n, name, entry)
        widths[n] = {k: e["high"] - e["low"] for k, e in result["metrics"].items()}
        assert result["n"] == 2 * n and result["n_patients"] == n
    for name in ("roc_auc", "brier", "sensitivity", "balanced_accuracy"):
        # sqrt(10) less spread expected; allow much slack for the bootstrap's own noise
        assert widths[400][name] < 0.6 * widths[40][name], name


def test_bootstrap_resamples_whole_patients():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    seen = []

    def statistic(rows):
        seen.append(rows)
        return {"n": float(len(rows))}

    patient_bootstrap(statistic, groups, n_boot=50, seed=0)
    sizes = {"a": 2, "b": 1, "c": 3}
    for rows in seen[1:]:
        drawn = groups[rows]
        for patient, size in sizes.items():
            assert (drawn == patient).sum() % size == 0  # a patient's scans come together
            first_scan = np.flatnonzero(groups == patient)[0]
            assert (rows == first_scan).sum() == (drawn == patient).sum() // size


def test_continuous_and_multiclass_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = diagnosis_metrics("continuous", y, (y + 0.5)[:, None], ["a", "b", "c", "d"], n_boot=20)
    assert m["metrics"]["mae"]["value"] == pytest.approx(0.5) and m["reliability"] is None
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    m = point_metrics("multiclass", np.array([0, 1, 2, 1]), proba)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["brier"] == pytest.approx(np.mean([0.06, 0.06, 0.06, 0.36 + 0.49 + 0.01]))
