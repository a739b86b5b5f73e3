"""The shareable cohort summary: rounded counts, quantiles pooled over 10 subjects, 2 digits."""

from __future__ import annotations

import numpy as np
import pytest

from medcl.data.shareable import OTHER, pooled_counts, pooled_quantiles, rounded_count, two_digits


@pytest.mark.parametrize(("n", "shown"), [(0, 0), (1, "<10"), (9, "<10"), (10, 10), (14, 10), (16, 20), (124, 120)])
def test_counts_are_rounded_to_ten_and_small_ones_hidden(n, shown):
    assert rounded_count(n) == shown


@pytest.mark.parametrize(("x", "shown"), [(40.0123, 40.0), (47.2273, 47.0), (0.012345, 0.012), (-3.456, -3.5), (0, 0)])
def test_two_significant_digits(x, shown):
    assert two_digits(x) == shown


def test_quantiles_are_means_of_ten_sorted_values_never_an_extreme():
    ages = 40.0123 + 0.37 * np.arange(40)
    # q10: values 0..9 (mean 41.68), q50: 15..24 (47.23), q90: 30..39 (52.78); then 2 digits
    assert pooled_quantiles(np.random.default_rng(0).permutation(np.r_[ages, np.nan])) == {
        "q10": 42.0, "q50": 47.0, "q90": 53.0}
    assert pooled_quantiles(ages[:19]) == "not shown (fewer than 20 values)"


def test_rare_categories_are_pooled_and_not_named():
    codes = np.repeat([0.0, 1.0, 2.0, 3.0, np.nan], [31, 12, 1, 4, 2])
    assert pooled_counts(codes, ["common", "other_ward", "RARE", "RARE2", "never"]) == {
        "common": 30, "other_ward": 10, OTHER: "<10"}
    assert pooled_counts(np.zeros(12), ["a", "b"]) == {"a": 10}  # nothing rare: no "other" entry
