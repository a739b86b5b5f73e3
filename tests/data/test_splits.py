"""Patient-level splits: no patient ever lands on two sides, for random cohorts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcl.data.splits import column_split, folds_to_split, group_kfold, split_problems
from medcl.errors import InputProblems, MedclInputError


@st.composite
def cohorts(draw):
    """(patient id per subject, binary label or None, folds): 4-40 patients, 1-4 subjects each."""
    n_patients = draw(st.integers(4, 40))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_patients, max_size=n_patients))
    groups = np.repeat([f"p{i}" for i in range(n_patients)], sizes)
    order = draw(st.permutations(range(len(groups))))
    groups = groups[list(order)]
    stratify = draw(st.booleans())
    y = np.array(
        draw(st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=len(groups), max_size=len(groups)))
    )
    k = draw(st.integers(2, min(6, n_patients)))
    return groups, (y if stratify else None), k


def _one_side_per_patient(groups, assignment) -> bool:
    seen = {}
    return all(seen.setdefault(g, a) == a for g, a in zip(groups, assignment, strict=True))


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.integers(0, 2**16))
def test_folds_and_splits_never_split_a_patient(cohort, seed):
    groups, y, k = cohort
    folds = group_kfold(groups, k, seed=seed, y=y)
    assert folds.shape == (len(groups),) and set(folds) == set(range(k))
    assert _one_side_per_patient(groups, folds)
    split = folds_to_split(folds, val_folds=[0], test_folds=[k - 1] if k > 2 else [])
    assert _one_side_per_patient(groups, split)
    np.testing.assert_array_equal(folds, group_kfold(groups, k, seed=seed, y=y))


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.data())
def test_column_split_accepts_patient_level_and_rejects_leaks(cohort, data):
    groups, _, _ = cohort
    per_patient = {g: data.draw(st.sampled_from(["train", "val", "test"])) for g in sorted(set(groups))}
    values = [per_patient[g] for g in groups]
    assert list(column_split(values, groups)) == values
    counts = {g: int((groups == g).sum()) for g in set(groups)}
    multi = sorted(g for g, c in counts.items() if c > 1)
    if multi:
        leaked = data.draw(st.sampled_from(multi))
        rows = np.flatnonzero(groups == leaked)
        values[rows[-1]] = {"train": "val", "val": "test", "test": "train"}[values[rows[-1]]]
        problems = split_problems(values, groups)
        assert len(problems) == 1 and f"row {rows[-1] + 1}" in problems[0] and "two splits" in problems[0]


def test_stratified_folds_balance_labels():
    groups = np.repeat([f"p{i}" for i in range(40)], 2)
    y = np.repeat(np.r_[np.zeros(30), np.ones(10)], 2)
    folds = group_kfold(groups, 5, seed=0, y=y)
    for f in range(5):
        assert y[folds == f].sum() == 4  # 10 positive patients, 2 per fold, 2 subjects each


def test_continuous_stratification_and_seed_changes_folds():
    groups = np.arange(50).astype(str)
    y = np.linspace(0, 1, 50)
    a, b = group_kfold(groups, 5, seed=0, y=y), group_kfold(groups, 5, seed=1, y=y)
    assert not np.array_equal(a, b)
    for f in range(5):
        assert 0.3 < y[a == f].mean() < 0.7


def test_too_few_patients_and_bad_values():
    with pytest.raises(MedclInputError, match="3 patient"):
        group_kfold(["a", "a", "b", "c"], 5)
    with pytest.raises(InputProblems, match="row 2 has 'training'"):
        column_split(["train", "training", ""], ["a", "b", "c"])
