"""Prior kernels: hand values, median heuristic, mean-embedding imputation, PSD, round-trip, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medcl.errors import MedclInputError
from medcl.kernels import KernelTerm, PriorKernel

NAN = float("nan")


def test_delta_kernel_by_hand():
    kernel = PriorKernel([KernelTerm("sex", "delta", 0, 1)])
    k = kernel(np.array([[0.0], [1.0], [0.0], [2.0]]))
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    assert torch.equal(k.double(), expected)


def test_rbf_kernel_by_hand():
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1, bandwidth=1.0)])
    k = kernel(torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64))
    e = math.exp
    expected = torch.tensor([[1, e(-0.5), e(-4.5)], [e(-0.5), 1, e(-2.0)], [e(-4.5), e(-2.0), 1]], dtype=torch.float64)
    torch.testing.assert_close(k, expected, atol=1e-15, rtol=0)


def test_rbf_on_vectors_and_cosine_by_hand():
    values = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    rbf = PriorKernel([KernelTerm("emb", "rbf", 0, 2, bandwidth=2.0)])(values)
    assert rbf[0, 1].item() == pytest.approx(math.exp(-5 / 8))  # ||(1,-2)||^2 = 5, 2 sigma^2 = 8
    assert rbf[1, 2].item() == pytest.approx(math.exp(-2 / 8))
    cos = PriorKernel([KernelTerm("emb", "cosine", 0, 2)])(values)
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[1, 0, s], [0, 1, s], [s, s, 1]], dtype=torch.float64)
    torch.testing.assert_close(cos, expected, atol=1e-15, rtol=0)


def test_product_and_weighted_sum_combine_terms():
    values = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    terms = [KernelTerm("age", "rbf", 0, 1, bandwidth=1.0, weight=3.0), KernelTerm("sex", "delta", 1, 2)]
    age = PriorKernel(terms[:1])(values[:, :1])
    sex = PriorKernel([KernelTerm("sex", "delta", 0, 1)])(values[:, 1:])
    torch.testing.assert_close(PriorKernel(terms)(values), age * sex)
    torch.testing.assert_close(PriorKernel(terms, combine="sum")(values), 0.75 * age + 0.25 * sex)


def test_median_heuristic_convention():
    # pairwise distances of 0, 1, 3 are 1, 3, 2 -> median 2
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1)]).fit(np.array([[0.0], [1.0], [3.0], [NAN]]))
    assert kernel.bandwidths == {"age": 2.0}
    # ties: 6 zero and 4 unit distances -> median 0 -> median of the non-zero distances
    kernel.fit(np.array([[0.0], [0.0], [0.0], [0.0], [1.0]]))
    assert kernel.bandwidths == {"age": 1.0}
    kernel.fit(np.array([[5.0], [5.0]]))  # all equal -> 1
    assert kernel.bandwidths == {"age": 1.0}
    # a given bandwidth is kept; vectors use Euclidean distances (3-4-5 triangle)
    given_bw = PriorKernel([KernelTerm("a", "rbf", 0, 1, bandwidth=0.3)]).fit(np.array([[0.0], [9.0]]))
    assert given_bw.bandwidths == {"a": 0.3}
    vectors = PriorKernel([KernelTerm("e", "rbf", 0, 2)]).fit(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]]))
    assert vectors.bandwidths == {"e": 4.0}  # distances 5, 4, 3


def test_missing_delta_uses_training_frequencies():
    kernel = PriorKernel([KernelTerm("sex", "delta", 0, 1)]).fit(np.array([[0.0], [0.0], [1.0], [1.0], [1.0]]))
    k = kernel(np.array([[0.0], [NAN], [1.0], [NAN]]))
    # p(0) = 0.4, p(1) = 0.6; missing-missing = 0.4^2 + 0.6^2 = 0.52
    expected = torch.tensor(
        [[1, 0.4, 0, 0.4], [0.4, 0.52, 0.6, 0.52], [0, 0.6, 1, 0.6], [0.4, 0.52, 0.6, 0.52]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(k, expected)


def test_missing_rbf_uses_training_mean_embedding():
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1, bandwidth=1.0)]).fit(np.array([[0.0], [2.0]]))
    values = torch.tensor([[0.0], [5.0]], dtype=torch.float64)
    k = kernel(values, torch.tensor([[False], [True]]))  # the mask wins over the (present) value 5
    e = math.exp
    assert k[0, 1].item() == pytest.approx((1 + e(-2)) / 2)  # mean_b k(b, 0) over b in {0, 2}
    assert k[1, 1].item() == pytest.approx((2 + 2 * e(-2)) / 4)  # mean over the 4 pairs (b, b')
    assert k[0, 0].item() == 1.0


def _mixed_kernel(combine="product"):
    terms = [
        KernelTerm("age", "rbf", 0, 1),
        KernelTerm("site", "delta", 1, 2),
        KernelTerm("emb", "cosine", 2, 5),
        KernelTerm("vae", "rbf", 5, 7, weight=2.0),
    ]
    return PriorKernel(terms, combine=combine)


def _cohort(n, seed=0, missing_rate=0.3):
    rng = np.random.default_rng(seed)
    values = np.c_[rng.normal(60, 10, n), rng.integers(0, 3, n), rng.normal(size=(n, 3)), rng.normal(size=(n, 2))]
    missing = np.zeros_like(values, dtype=bool)
    for start, stop in [(0, 1), (1, 2), (2, 5), (5, 7)]:
        missing[:, start:stop] = (rng.random(n) < missing_rate)[:, None]
    values[missing] = np.nan
    return values, missing


@pytest.mark.parametrize("combine", ["product", "sum"])
def test_kernel_with_missing_values_is_psd(combine):
    values, missing = _cohort(400)  # > 256 training rows: quantile / subsample references
    kernel = _mixed_kernel(combine).fit(values, missing)
    batch, batch_missing = _cohort(60, seed=1, missing_rate=0.5)
    k = kernel(torch.as_tensor(batch), torch.as_tensor(batch_missing))
    assert k.dtype == torch.float64 and torch.allclose(k, k.T)
    assert torch.linalg.eigvalsh(k).min().item() >= -1e-8


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 10_000),
    missing_rate=st.floats(0.0, 1.0),
    combine=st.sampled_from(["product", "sum"]),
)
def test_kernel_psd_property(n, seed, missing_rate, combine):
    train, train_missing = _cohort(30, seed=seed, missing_rate=0.2)
    train_missing[0] = False  # every attribute keeps at least one training value
    train[0] = np.arange(7.0)
    kernel = _mixed_kernel(combine).fit(train, train_missing)
    values, missing = _cohort(n, seed=seed + 1, missing_rate=missing_rate)
    k = kernel(values.astype(np.float64), missing)
    assert torch.linalg.eigvalsh(k).min().item() >= -1e-8
    assert torch.all(k.diagonal() <= 1 + 1e-12)


def test_serialisation_round_trip_gives_identical_matrices():
    values, missing = _cohort(400)
    kernel = _mixed_kernel("sum").fit(values, missing)
    restored = PriorKernel.from_dict(json.loads(json.dumps(kernel.to_dict())))
    batch, batch_missing = _cohort(50, seed=3, missing_rate=0.4)
    for dtype in (np.float32, np.float64):
        assert torch.equal(kernel(batch.astype(dtype), batch_missing), restored(batch.astype(dtype), batch_missing))
    assert restored.bandwidths == kernel.bandwidths and restored.combine == "sum"
    reference = kernel.to_dict()["fitted"]["references"]
    assert len(reference["age"]["points"]) == 256 and len(reference["vae"]["points"]) == 256
    assert len(reference["site"]["points"]) == 3  # the categories seen in training
    unfitted = PriorKernel.from_dict(_mixed_kernel().to_dict())
    assert not unfitted.is_fitted and unfitted.bandwidths == {"age": None, "vae": None}


def test_output_dtype_and_device_follow_the_input():
    kernel = PriorKernel([KernelTerm("sex", "delta", 0, 1)])
    assert kernel(np.zeros((3, 1), dtype=np.float32)).dtype == torch.float32
    assert kernel(torch.zeros(3, 1, dtype=torch.int64)).dtype == torch.float32
    k64 = kernel(torch.zeros(3, 1, dtype=torch.float64))
    assert k64.dtype == torch.float64 and k64.device.type == "cpu" and k64.shape == (3, 3)


@pytest.mark.parametrize(
    ("call", "culprit"),
    [
        (
            lambda: PriorKernel([KernelTerm("age", "rbf", 0, 1)])(np.zeros((3, 1))),
            "'age' has no RBF bandwidth",
        ),
        (
            lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)])(np.zeros((3, 2))),
            "values: expected an attribute matrix of shape (n, 1)",
        ),
        (lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)]).fit(np.zeros(3)), "values: expected"),
        (lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)])(np.array([[NAN], [1.0]])), "call .fit"),
        (
            lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)])(np.zeros((2, 1)), np.zeros((3, 1), bool)),
            "missing: expected shape",
        ),
        (
            lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)]).fit(np.array([[NAN], [NAN]])),
            "attribute 'a' has no non-missing",
        ),
        (lambda: KernelTerm("a", "gauss", 0, 1), "kind must be one of rbf, delta, cosine"),
        (lambda: KernelTerm("a", "delta", 0, 1, bandwidth=1.0), "bandwidth only applies to kind 'rbf'"),
        (lambda: KernelTerm("a", "rbf", 2, 2), "start < stop"),
        (lambda: KernelTerm("a", "rbf", 0, 1, bandwidth=-1.0), "bandwidth must be a number > 0"),
        (lambda: KernelTerm("a", "rbf", 0, 1, weight=0), "weight must be a number > 0"),
        (lambda: PriorKernel([]), "terms: expected at least one"),
        (lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)] * 2), "duplicate attribute name(s) a"),
        (
            lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)], combine="max"),
            "combine: expected one of product, sum",
        ),
        (lambda: PriorKernel.from_dict({"combine": "sum"}), "kernel dict"),
    ],
)
def test_errors_name_the_culprit(call, culprit):
    with pytest.raises(MedclInputError) as excinfo:
        call()
    assert culprit in str(excinfo.value)
