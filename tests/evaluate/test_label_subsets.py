"""Part of the training labels: patient-level, stratified, nested across sizes for one seed."""

from __future__ import annotations

import numpy as np
import pytest

from medcl.errors import MedclInputError
from medcl.evaluate.label_subsets import nested_train_subset, parse_train_size


def _cohort(n_patients: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    scans = rng.integers(1, 3, n_patients)  # one or two scans per patient
    patients = np.repeat([f"p{k:03d}" for k in range(n_patients)], scans)
    y_patient = (rng.uniform(size=n_patients) < 0.3).astype(float)
    return patients, np.repeat(y_patient, scans), y_patient


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fractions_are_nested_patient_level_and_stratified(seed):
    patients, y, y_patient = _cohort()
    rows = np.arange(len(patients))
    previous: set[str] = set()
    for fraction in (0.1, 0.25, 0.5, None):
        subset = nested_train_subset(rows, patients, y, "binary", fraction, seed)
        chosen = set(patients[subset])
        assert previous <= chosen  # 10% ⊂ 25% ⊂ 50% ⊂ 100%
        assert set(subset) == set(np.flatnonzero(np.isin(patients, list(chosen))))  # all scans of a patient
        n = len(chosen)
        assert n == (80 if fraction is None else int(np.ceil(fraction * 80)))
        positives = sum(y_patient[int(p[1:])] for p in chosen)
        assert abs(positives - n * y_patient.mean()) <= 1.0  # the class balance, up to rounding
        previous = chosen


def test_patient_counts_seeds_and_errors():
    patients, y, _ = _cohort()
    rows = np.arange(len(patients))
    a = set(patients[nested_train_subset(rows, patients, y, "binary", 20, seed=0)])
    b = set(patients[nested_train_subset(rows, patients, y, "binary", 20, seed=1)])
    assert len(a) == len(b) == 20 and a != b
    assert set(patients[nested_train_subset(rows, patients, y, "binary", 10, seed=0)]) <= a
    with pytest.raises(MedclInputError, match="only 80 patients"):
        nested_train_subset(rows, patients, y, "binary", 81, seed=0)
    ages = np.linspace(20, 80, len(patients))
    assert len(set(patients[nested_train_subset(rows, patients, ages, "continuous", 0.5, 0)])) == 40


@pytest.mark.parametrize(("text", "value"), [("40", 40), ("25%", 0.25), ("100%", None), ("all", None),
                                             (None, None), ("12.5%", 0.125)])
def test_parse_train_size(text, value):
    assert parse_train_size(text) == value


@pytest.mark.parametrize("text", ["0", "-3", "2.5", "150%", "ten", "0%"])
def test_parse_train_size_refuses(text):
    with pytest.raises(MedclInputError, match="--train-size"):
        parse_train_size(text)
