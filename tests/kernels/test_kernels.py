"""Prior kernels: hand values, median heuristic, mean-embedding imputation, PSD, round-trip, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2, norm

from medcl.errors import MedclInputError
from medcl.kernels import MIN_GROUP, REFERENCE_GROUPS, KernelTerm, PriorKernel
from medcl.kernels.prior import OTHER_CATEGORY

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


def test_joint_bandwidth_rule_puts_a_typical_pair_of_a_product_at_exp_minus_half():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(0, 1, 60), rng.normal(5, 3, 60), rng.normal(0, 0.1, 60)])
    x[3, 1] = NAN  # missing values: the joint median uses the fully observed rows
    terms = [KernelTerm(f"s{k}", "rbf", k, k + 1) for k in range(3)]
    per = PriorKernel(terms, bandwidth_rule="per_attribute").fit(x)
    joint = PriorKernel(terms).fit(x)  # the default rule
    # the joint factor is the median over pairs of the distance in per-term-median units
    full = x[~np.isnan(x).any(axis=1)]
    z = full / np.array([per.bandwidths[t.name] for t in terms])
    i, j = np.triu_indices(len(z), k=1)
    factor = np.median(np.sqrt(((z[i] - z[j]) ** 2).sum(axis=1)))
    for t in terms:
        assert joint.bandwidths[t.name] == pytest.approx(factor * per.bandwidths[t.name])
    # Gaussian attributes: a coordinate difference in per-term-median units is |N(0, s^2)| with median 1,
    # s = 1 / z_0.75, so the joint distance's median is s * sqrt(median of chi^2 with 3 dof) = 2.28
    assert factor == pytest.approx(math.sqrt(chi2.median(3)) / norm.ppf(0.75), rel=0.1)
    k = joint(full).numpy()[i, j]
    assert np.median(k) == pytest.approx(math.exp(-0.5), rel=1e-6)  # as a single attribute's median pair
    assert np.median(per(full).numpy()[i, j]) < 0.3
    # unchanged: one RBF term, a sum, a given bandwidth (and the delta terms of a product)
    one = [KernelTerm("s0", "rbf", 0, 1), KernelTerm("d", "delta", 1, 2)]
    codes = np.column_stack([x[:, 0], rng.integers(0, 2, 60)])
    single = PriorKernel(one, bandwidth_rule="per_attribute").fit(codes).bandwidths
    assert PriorKernel(one).fit(codes).bandwidths == single
    assert PriorKernel(terms, "sum").fit(x).bandwidths == per.bandwidths
    given = [KernelTerm("s0", "rbf", 0, 1, bandwidth=0.7), *terms[1:]]
    kept = PriorKernel(given).fit(x).bandwidths
    assert kept["s0"] == 0.7 and kept["s1"] > per.bandwidths["s1"]
    # the rule travels with the kernel
    assert PriorKernel.from_dict(joint.to_dict()).bandwidth_rule == "joint"


def test_missing_delta_uses_training_frequencies():
    kernel = PriorKernel([KernelTerm("sex", "delta", 0, 1)]).fit(np.repeat([[0.0], [1.0]], [20, 30], axis=0))
    k = kernel(np.array([[0.0], [NAN], [1.0], [NAN]]))
    # p(0) = 0.4, p(1) = 0.6; missing-missing = 0.4^2 + 0.6^2 = 0.52
    expected = torch.tensor(
        [[1, 0.4, 0, 0.4], [0.4, 0.52, 0.6, 0.52], [0, 0.6, 1, 0.6], [0.4, 0.52, 0.6, 0.52]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(k, expected)


def test_missing_rbf_uses_the_mean_embedding_of_the_group_gaussians():
    # 20 training ages 0..19 -> 2 groups of MIN_GROUP = 10 sorted values: means 4.5 and 14.5,
    # spread (variance) of 0..9 = 99/12 = 8.25; each group stands for N(mean, 8.25)
    assert MIN_GROUP == 10
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1, bandwidth=4.0)]).fit(np.arange(20.0)[::-1, None])
    ref = kernel.to_dict()["fitted"]["references"]["age"]
    assert ref == {"points": [[4.5], [14.5]], "weights": [0.5, 0.5], "spreads": [8.25, 8.25]}
    values = torch.tensor([[0.0], [5.0]], dtype=torch.float64)
    k = kernel(values, torch.tensor([[False], [True]]))  # the mask wins over the (present) value 5
    # E_{b ~ N(c, s)} exp(-(a - b)^2 / (2 sigma^2)) = sqrt(sigma^2 / v) exp(-(a - c)^2 / (2 v)), v = sigma^2 + s
    v = 16 + 8.25
    g = lambda d, v: math.sqrt(16 / v) * math.exp(-(d**2) / (2 * v))  # noqa: E731
    assert k[0, 1].item() == pytest.approx((g(4.5, v) + g(14.5, v)) / 2)
    assert k[1, 1].item() == pytest.approx((2 * g(0, 16 + 16.5) + 2 * g(10, 16 + 16.5)) / 4)
    assert k[0, 0].item() == 1.0
    # close to the exact mean over the 20 training values
    exact = np.mean(np.exp(-(np.arange(20.0) ** 2) / 32))
    assert k[0, 1].item() == pytest.approx(exact, abs=3e-3)


def test_rare_categories_are_pooled_or_left_out_of_the_delta_reference():
    # 20 x code 0, 30 x code 1, 4 x code 2, 7 x code 5: codes 2 and 5 pool 11 subjects into "other"
    train = np.repeat([[0.0], [1.0], [2.0], [5.0]], [20, 30, 4, 7], axis=0)
    ref = PriorKernel([KernelTerm("site", "delta", 0, 1)]).fit(train).to_dict()["fitted"]["references"]["site"]
    assert ref["points"] == [[0.0], [1.0], [OTHER_CATEGORY]]
    np.testing.assert_allclose(ref["weights"], [20 / 61, 30 / 61, 11 / 61])
    kernel = PriorKernel([KernelTerm("site", "delta", 0, 1)]).fit(train[:-2])  # rare pool of 9: left out
    ref = kernel.to_dict()["fitted"]["references"]["site"]
    assert ref["points"] == [[0.0], [1.0]] and ref["weights"] == [0.4, 0.6]
    k = kernel(np.array([[2.0], [NAN], [1.0]]))
    # a rare category is similar to no stored one; missing-missing = 0.4^2 + 0.6^2
    torch.testing.assert_close(k[1], torch.tensor([0.0, 0.52, 0.6], dtype=torch.float64))


@pytest.mark.parametrize(("kind", "width"), [("rbf", 1), ("rbf", 2), ("delta", 1), ("cosine", 2)])
def test_fewer_training_values_than_a_group_keep_no_reference(kind, width):
    # two training values: their mean and spread would give both exactly, so nothing is stored
    train = np.array([[0.0] * width, [2.0] * width])
    kernel = PriorKernel([KernelTerm("a", kind, 0, width)]).fit(train)
    assert kernel.to_dict()["fitted"]["references"]["a"] == {"points": [], "weights": [], "spreads": []}
    k = kernel(np.array([[2.0] * width, [NAN] * width, [NAN] * width]))
    # a missing value has the zero feature map: similar to no one, itself included (K stays PSD)
    torch.testing.assert_close(k, torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64))
    restored = PriorKernel.from_dict(json.loads(json.dumps(kernel.to_dict())))
    assert torch.equal(restored(np.array([[2.0] * width, [NAN] * width])), k[:2, :2])


def _exact_imputation(kind, train, query, bandwidth):
    """Mean embedding over every training row (what the de-identified reference approximates)."""
    t, q = torch.as_tensor(train), torch.as_tensor(query)
    if kind == "cosine":
        k_qt, k_tt = F.normalize(q, dim=1) @ F.normalize(t, dim=1).T, F.normalize(t, dim=1) @ F.normalize(t, dim=1).T
    else:
        k_qt = torch.exp(-torch.cdist(q, t) ** 2 / (2 * bandwidth**2))
        k_tt = torch.exp(-torch.cdist(t, t) ** 2 / (2 * bandwidth**2))
    return k_qt.mean(1), k_tt.mean()


@pytest.mark.parametrize(
    ("kind", "width", "tol"), [("rbf", 1, 1e-3), ("cosine", 3, 1e-12), ("rbf", 4, 5e-3), ("rbf", 16, 5e-3)]
)
def test_reference_keeps_no_training_value_and_imputes_close_to_the_exact_mean_embedding(kind, width, tol):
    rng = np.random.default_rng(1)
    train = rng.normal(50, 10, size=(500, width)) if kind == "rbf" else rng.normal(size=(500, width))
    kernel = PriorKernel([KernelTerm("a", kind, 0, width)]).fit(train)
    ref = kernel.to_dict()["fitted"]["references"]["a"]
    points, weights = np.asarray(ref["points"]), np.asarray(ref["weights"])
    # no stored point is a training row, and each pools at least MIN_GROUP subjects
    assert not (np.abs(points[:, None, :] - train[None]).max(axis=2) < 1e-9).any()
    assert len(points) <= REFERENCE_GROUPS and weights.sum() == pytest.approx(1.0)
    assert (weights * len(train)).min() >= MIN_GROUP - 1e-9
    query = rng.normal(50, 10, size=(30, width)) if kind == "rbf" else rng.normal(size=(30, width))
    k = kernel(np.r_[query, np.full((1, width), NAN)])
    to_train, train_mean = _exact_imputation(kind, train, query, kernel.bandwidths.get("a"))
    assert (k[-1, :-1] - to_train).abs().max().item() < tol
    assert abs(k[-1, -1].item() - train_mean.item()) < tol


def test_vector_reference_merges_small_clusters():
    # one far-away outlier pair would make its own k-means cluster: it must be pooled into a larger group
    rng = np.random.default_rng(0)
    train = np.r_[rng.normal(size=(58, 2)), [[40.0, 40.0], [40.5, 40.0]]]
    kernel = PriorKernel([KernelTerm("e", "rbf", 0, 2)]).fit(train)
    ref = kernel.to_dict()["fitted"]["references"]["e"]
    assert (np.asarray(ref["weights"]) * len(train)).min() >= MIN_GROUP - 1e-9
    assert not any(np.allclose(p, t) for p in ref["points"] for t in train[-2:])


def test_version_1_kernel_dicts_with_raw_cosine_points_still_load():
    raw = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    old = PriorKernel([KernelTerm("e", "cosine", 0, 2)]).to_dict()
    old.update(format_version=1, fitted={"bandwidths": {}, "references": {
        "e": {"points": raw.tolist(), "weights": [1 / 3] * 3}}})
    k = PriorKernel.from_dict(old)(np.array([[1.0, 0.0], [NAN, NAN]]))
    to_train, train_mean = _exact_imputation("cosine", raw, np.array([[1.0, 0.0]]), None)
    assert k[0, 1].item() == pytest.approx(to_train.item()) and k[1, 1].item() == pytest.approx(train_mean.item())


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
    values, missing = _cohort(400)  # group-mean references of many groups
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
    n_age = (~missing[:, 0]).sum()
    assert len(reference["age"]["points"]) == min(REFERENCE_GROUPS, n_age // MIN_GROUP)
    vae, n_vae = reference["vae"], (~missing[:, 5]).sum()
    assert 1 < len(vae["points"]) <= min(REFERENCE_GROUPS, n_vae // MIN_GROUP)
    weights = np.asarray(vae["weights"])  # each group pools >= MIN_GROUP training subjects
    assert weights.sum() == pytest.approx(1.0) and np.all(weights * n_vae >= MIN_GROUP - 1e-6)
    assert len(reference["emb"]["points"]) == 1
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
        (
            lambda: PriorKernel([KernelTerm("a", "delta", 0, 1)], bandwidth_rule="wide"),
            "bandwidth_rule: expected one of per_attribute, joint",
        ),
    ],
)
def test_errors_name_the_culprit(call, culprit):
    with pytest.raises(MedclInputError) as excinfo:
        call()
    assert culprit in str(excinfo.value)


def test_synthetic_batch_draws_from_the_de_identified_reference():
    from medcl.kernels.public import synthetic_batch

    ages = np.arange(20.0)  # 2 groups: means 4.5 and 14.5, spread 8.25 each
    sites = np.repeat([0.0, 1.0, 2.0], [4, 6, 10])  # codes 0 and 1: 10 subjects pooled into "other"
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1, bandwidth=4.0), KernelTerm("site", "delta", 1, 2),
                          KernelTerm("few", "rbf", 2, 3)]).fit(np.c_[ages, sites, np.r_[[3.0, 4.0], [NAN] * 18]])
    values, missing = synthetic_batch(kernel.to_dict(), n=4000, seed=0)
    assert values.shape == (4000, 3) and not missing.any()
    assert np.all(np.diff(values[:, 0]) >= 0)  # sorted by the first attribute
    assert values[:, 0].mean() == pytest.approx(9.5, abs=0.3)  # mixture mean and variance 8.25 + 25
    assert values[:, 0].var() == pytest.approx(33.25, rel=0.05)
    site = values[:, 1]
    assert np.mean(site == 2.0) == pytest.approx(0.5, abs=0.03) and set(site[site >= 0]) == {2.0}
    other = site[site < 0]  # each pooled draw has a code of its own: similar to no other subject
    assert len(other) == len(set(other)) and len(other) / 4000 == pytest.approx(0.5, abs=0.03)
    # "few" keeps no reference (2 training values): draws scaled by its bandwidth, not its values
    assert values[:, 2].std() == pytest.approx(kernel.bandwidths["few"], rel=0.05)
    k = kernel(values[:200], missing[:200])
    assert torch.linalg.eigvalsh(k).min().item() >= -1e-8
