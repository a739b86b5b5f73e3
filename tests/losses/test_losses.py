"""Losses: hand-computed values, independent float64 references, limits, invariants, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medcl.errors import MedclInputError
from medcl.kernels import KernelTerm, PriorKernel
from medcl.losses import (
    METHODS,
    AlignUniformLoss,
    DecoupledContrastiveLoss,
    DecoupledUniformityLoss,
    InfoNCELoss,
    KernelDecoupledUniformityLoss,
    SupConLoss,
    SupervisedLoss,
    YAwareInfoNCELoss,
    _cholesky,
    _pairwise,
    align_uniform,
    build_loss,
    decoupled_contrastive,
    decoupled_uniformity,
    kept_spread,
    nt_xent,
    supcon,
    view_cross_entropy,
    y_aware_infonce,
)

# ---------------------------------------------------------------- independent float64 references
# Written from the formulas with explicit loops: no Gram trick, no masking, no shared helpers.


def _normalise(z):
    return [[z[i, v] / z[i, v].norm() for v in range(z.shape[1])] for i in range(z.shape[0])]


def ref_du(z, kernel=None, t=2.0, lam=0.01):
    x = _normalise(z)
    n, views = z.shape[0], z.shape[1]
    mu = torch.stack([sum(x[i]) / views for i in range(n)])
    if kernel is not None:
        eye = torch.eye(n, dtype=z.dtype)
        mu = torch.linalg.solve(kernel + lam * eye, kernel) @ mu
    total = sum(torch.exp(-t * ((mu[i] - mu[j]) ** 2).sum()) for i in range(n) for j in range(n) if i != j)
    return torch.log(total / (n * (n - 1)))


def ref_official_du(z, kernel=None, t=2.0, lam=0.01):
    """The paper's code: explicit inverse, n x n product, pdist."""
    mu = F.normalize(z, p=2, dim=-1).mean(dim=1)
    if kernel is not None:
        mu = torch.inverse(kernel + lam * torch.eye(len(kernel), dtype=z.dtype)) @ kernel @ mu
    return torch.pdist(mu).pow(2).mul(-t).exp().mean().log()


def _views(z):
    x = _normalise(z)
    flat = [x[i][v] for i in range(z.shape[0]) for v in range(z.shape[1])]
    subject = [i for i in range(z.shape[0]) for _ in range(z.shape[1])]
    return flat, subject


def ref_weighted_infonce(z, weight, temperature):
    """mean_a sum_b w(a, b) * -log(exp(s_ab) / sum_{c != a} exp(s_ac)), weights normalised per a."""
    flat, subject = _views(z)
    m = len(flat)
    total = 0.0
    for a in range(m):
        raw = [0.0 if b == a else weight(a, b, subject) for b in range(m)]
        norm = sum(raw)
        denom = sum(torch.exp(flat[a] @ flat[c] / temperature) for c in range(m) if c != a)
        for b in range(m):
            if raw[b] > 0:
                total = total - raw[b] / norm * torch.log(torch.exp(flat[a] @ flat[b] / temperature) / denom)
    return total / m


def ref_nt_xent(z, temperature=0.1):
    return ref_weighted_infonce(z, lambda a, b, s: float(s[a] == s[b]), temperature)


def ref_supcon(z, labels, temperature=0.1):
    return ref_weighted_infonce(z, lambda a, b, s: float(labels[s[a]] == labels[s[b]]), temperature)


def ref_y_aware(z, y, sigma, temperature=0.1):
    def weight(a, b, s):
        ya, yb = y[s[a]], y[s[b]]
        if math.isnan(ya) or math.isnan(yb):
            return float(s[a] == s[b])
        return math.exp(-((ya - yb) ** 2) / (2 * sigma**2))

    return ref_weighted_infonce(z, weight, temperature)


def ref_dcl(z, temperature=0.1):
    flat, subject = _views(z)
    m = len(flat)
    total = 0.0
    for a in range(m):
        positives = [b for b in range(m) if b != a and subject[b] == subject[a]]
        negatives = sum(torch.exp(flat[a] @ flat[c] / temperature) for c in range(m) if subject[c] != subject[a])
        for b in positives:
            total = total + (-(flat[a] @ flat[b]) / temperature + torch.log(negatives)) / len(positives)
    return total / m


def ref_align_uniform(z, alpha=2.0, t=2.0):
    x = F.normalize(z, dim=-1)
    n, views = z.shape[0], z.shape[1]
    pairs = [(v, w) for v in range(views) for w in range(v + 1, views)]
    align = sum((x[i, v] - x[i, w]).norm() ** alpha for i in range(n) for v, w in pairs) / (n * len(pairs))
    uniform = sum(torch.pdist(x[:, v]).pow(2).mul(-t).exp().mean().log() for v in range(views)) / views
    return align + uniform


def _z(n=6, views=2, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, views, d, generator=g, dtype=dtype) * 2).requires_grad_()


def _rbf_kernel(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return torch.exp(-((a - a.T) ** 2) / 2)


def _value_and_grad(fn, z):
    z = z.detach().clone().requires_grad_()
    value = fn(z)
    (grad,) = torch.autograd.grad(value, z)
    return value.detach(), grad


def assert_same(fn, ref, z, atol=1e-6):
    v1, g1 = _value_and_grad(fn, z)
    v2, g2 = _value_and_grad(ref, z)
    torch.testing.assert_close(v1, v2, atol=atol, rtol=0)
    torch.testing.assert_close(g1, g2, atol=atol, rtol=0)


# ---------------------------------------------------------------- hand-computed values


def test_du_two_subjects_by_hand():
    e1, e2 = torch.eye(2, dtype=torch.float64)
    # identical views -> centroids e1, e2 at squared distance 2 -> L = log exp(-2t) = -4 for t = 2
    z = torch.stack([torch.stack([e1, 3 * e1]), torch.stack([e2, 0.5 * e2])])  # scale is normalised away
    assert decoupled_uniformity(z).item() == pytest.approx(-4.0, abs=1e-12)
    # views e1, e2 -> mu0 = (1/2, 1/2); views -e1, -e1 -> mu1 = (-1, 0); ||mu0 - mu1||^2 = 2.5
    z = torch.stack([torch.stack([e1, e2]), torch.stack([-e1, -2 * e1])])
    assert decoupled_uniformity(z, t=2.0).item() == pytest.approx(-5.0, abs=1e-12)


def test_kernel_du_two_subjects_by_hand():
    # K = [[1, c], [c, 1]]: the difference mu0 - mu1 lies on the eigenvector (1, -1) of K with
    # eigenvalue 1 - c, so A = (K + lam I)^-1 K shrinks it by (1 - c) / (1 - c + lam).
    # c = lam = 0.5: factor 1/2, squared distance 2 -> 0.5, L = -t * 0.5 = -1.
    e1, e2 = torch.eye(2, dtype=torch.float64)
    z = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])])
    kernel = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    assert decoupled_uniformity(z, kernel, t=2.0, lam=0.5).item() == pytest.approx(-1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda z: nt_xent(z), math.log(3)),  # 3 candidates, all equally similar
        (lambda z: supcon(z, torch.tensor([0, 1])), math.log(3)),
        (lambda z: y_aware_infonce(z, torch.tensor([1.0, 2.0]), sigma=1.0), math.log(3)),
        (lambda z: decoupled_contrastive(z), math.log(2)),  # 2 negatives, all equal
        (lambda z: align_uniform(z), 0.0),  # no misalignment, all distances 0
        (lambda z: decoupled_uniformity(z), 0.0),
    ],
)
def test_identical_views_give_known_values(fn, expected):
    z = torch.ones(2, 2, 3, dtype=torch.float64)
    assert fn(z).item() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- independent references


@pytest.mark.parametrize("views", [2, 4])
@pytest.mark.parametrize("with_kernel", [False, True])
def test_du_matches_float64_reference(views, with_kernel):
    z = _z(n=7, views=views)
    kernel = _rbf_kernel(7) if with_kernel else None
    assert_same(
        lambda x: decoupled_uniformity(x, kernel, t=1.5, lam=0.05),
        lambda x: ref_du(x, kernel, t=1.5, lam=0.05),
        z,
    )


@pytest.mark.parametrize("views", [2, 4])
@pytest.mark.parametrize("with_kernel", [False, True])
def test_du_matches_official_formulation(views, with_kernel):
    z = _z(n=9, views=views, seed=3)
    kernel = _rbf_kernel(9, seed=4) if with_kernel else None
    assert_same(lambda x: decoupled_uniformity(x, kernel), lambda x: ref_official_du(x, kernel), z, atol=1e-5)


def test_du_blocked_triangle_and_recompute_paths(monkeypatch):
    # several row blocks with ragged edges, and the backward that recomputes instead of storing
    z = _z(n=11, views=2, seed=5)
    kernel = _rbf_kernel(11)
    expected = _value_and_grad(lambda x: ref_du(x, kernel), z)
    monkeypatch.setattr(_pairwise, "_BLOCK_ROWS", 4)
    for save_limit in (1 << 26, 0):
        monkeypatch.setattr(_pairwise, "_SAVE_LIMIT", save_limit)
        value, grad = _value_and_grad(lambda x: decoupled_uniformity(x, kernel), z)
        torch.testing.assert_close(value, expected[0], atol=1e-10, rtol=0)
        torch.testing.assert_close(grad, expected[1], atol=1e-10, rtol=0)


def test_blocked_cholesky_matches_lapack(monkeypatch):
    monkeypatch.setattr(_cholesky, "_BLOCK", 4)  # 11 rows: blocks 4, 4, 3
    a = torch.randn(11, 30, dtype=torch.float64)
    spd = a @ a.T + 0.1 * torch.eye(11, dtype=torch.float64)
    chol, info = _cholesky.cholesky_lower_(spd.clone())
    assert info == 0
    torch.testing.assert_close(chol, torch.linalg.cholesky(spd), atol=1e-12, rtol=0)
    spd[6, 6] = -1.0  # the 7th leading minor is the first that is not positive definite
    assert _cholesky.cholesky_lower_(spd.clone())[1] == torch.linalg.cholesky_ex(spd)[1].item() == 7
    kernel = _rbf_kernel(11)  # and the loss through the blocked path equals the reference
    assert_same(lambda x: decoupled_uniformity(x, kernel), lambda x: ref_du(x, kernel), _z(11, 2, seed=7))


def test_pairwise_potential_gradcheck():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: _pairwise.log_mean_gaussian_potential(y, 0.7), (x,))


@pytest.mark.parametrize("views", [2, 4])
def test_nt_xent_matches_reference(views):
    assert_same(lambda x: nt_xent(x, temperature=0.5), lambda x: ref_nt_xent(x, 0.5), _z(5, views))


@pytest.mark.parametrize("views", [2, 4])
def test_dcl_matches_reference(views):
    assert_same(lambda x: decoupled_contrastive(x, temperature=0.5), lambda x: ref_dcl(x, 0.5), _z(5, views))


@pytest.mark.parametrize("views", [2, 4])
def test_supcon_matches_reference(views):
    labels = torch.tensor([0, 1, 0, 2, 1])
    assert_same(
        lambda x: supcon(x, labels, temperature=0.5),
        lambda x: ref_supcon(x, labels.tolist(), 0.5),
        _z(5, views),
    )


@pytest.mark.parametrize("views", [2, 4])
def test_y_aware_matches_reference_with_missing(views):
    y = torch.tensor([50.0, 61.0, float("nan"), 55.0, 70.0], dtype=torch.float64)
    assert_same(
        lambda x: y_aware_infonce(x, y, sigma=6.0, temperature=0.5),
        lambda x: ref_y_aware(x, y.tolist(), 6.0, 0.5),
        _z(5, views),
    )
    # a `missing` mask behaves like NaN
    y_filled = torch.nan_to_num(y, nan=55.0)
    missing = torch.isnan(y)
    assert_same(
        lambda x: y_aware_infonce(x, y_filled, sigma=6.0, temperature=0.5, missing=missing),
        lambda x: ref_y_aware(x, y.tolist(), 6.0, 0.5),
        _z(5, views),
    )


def test_y_aware_normalises_weights_per_anchor_not_per_candidate():
    # With uneven y, normalising the kernel weights along the candidate axis (as the public
    # implementations do) gives a different loss; ours is the per-anchor one of the paper.
    z = _z(4, 2, seed=9)
    y = [0.0, 0.1, 3.0, 9.0]
    ours = y_aware_infonce(z, torch.tensor(y, dtype=torch.float64), sigma=1.0, temperature=0.5)
    flat, subject = _views(z)
    k = [[math.exp(-((y[subject[a]] - y[subject[b]]) ** 2) / 2) if a != b else 0.0 for b in range(8)] for a in range(8)]
    column_sums = [sum(k[a][b] for a in range(8)) for b in range(8)]
    wrong_axis = 0.0
    for a in range(8):
        denom = sum(torch.exp(flat[a] @ flat[c] / 0.5) for c in range(8) if c != a)
        for b in range(8):
            if a != b:
                wrong_axis -= k[a][b] / column_sums[b] * torch.log(torch.exp(flat[a] @ flat[b] / 0.5) / denom)
    torch.testing.assert_close(ours, ref_y_aware(z, y, 1.0, 0.5))
    assert abs(ours.item() - wrong_axis.item() / 8) > 1e-3


@pytest.mark.parametrize("views", [2, 4])
def test_align_uniform_matches_reference(views):
    assert_same(lambda x: align_uniform(x), lambda x: ref_align_uniform(x), _z(6, views))
    assert_same(lambda x: align_uniform(x, alpha=3.0, t=1.0), lambda x: ref_align_uniform(x, 3.0, 1.0), _z(6, views))


# ---------------------------------------------------------------- limits and invariants


def test_identity_kernel_is_plain_du_with_shrunk_temperature():
    z, lam, t = _z(8, 2), 0.3, 2.0
    with_identity = decoupled_uniformity(z, torch.eye(8, dtype=torch.float64), t=t, lam=lam)
    plain = decoupled_uniformity(z, None, t=t / (1 + lam) ** 2)
    torch.testing.assert_close(with_identity, plain, atol=1e-12, rtol=0)


def test_rescaled_identity_kernel_is_plain_du():
    z = _z(8, 2)
    rescaled = decoupled_uniformity(z, 3.0 * torch.eye(8, dtype=torch.float64), t=2.0, lam=0.3, rescale=True)
    torch.testing.assert_close(rescaled, decoupled_uniformity(z, None, t=2.0), atol=1e-12, rtol=0)


def test_rescale_divides_t_by_the_kept_spread_of_the_spectrum():
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    kernel = 0.9 * (labels[:, None] == labels[None]).double() + 0.1 * torch.eye(8, dtype=torch.float64)
    lam, t = 0.05, 2.0
    e = torch.linalg.eigvalsh(kernel)
    r = float(((e / (e + lam)) ** 2).mean())  # independent of the Cholesky route
    assert kept_spread(kernel, lam) == pytest.approx(r, rel=1e-10)
    assert 0.1**2 / 0.15**2 < r < 1  # the instance directions keep (w / (w + lam))^2 = 0.44, the two class means ~1
    z = _z(8, 3, seed=4)
    torch.testing.assert_close(decoupled_uniformity(z, kernel, t=t, lam=lam, rescale=True),
                               ref_du(z, kernel, t=t / r, lam=lam), atol=1e-10, rtol=0)
    module = KernelDecoupledUniformityLoss(PriorKernel([KernelTerm("y", "delta", 0, 1)], instance_weight=0.1),
                                           t=t, lam=lam, rescale=True)
    torch.testing.assert_close(module(z, labels[:, None].double()),
                               ref_du(z, kernel, t=t / r, lam=lam), atol=1e-10, rtol=0)


def test_kept_spread_estimate_at_large_n(monkeypatch):
    import importlib

    du_module = importlib.import_module("medcl.losses.decoupled_uniformity")  # the module, not the function
    x = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    kernel = 0.97 * torch.exp(-torch.cdist(x, x) ** 2 / 2) + 0.03 * torch.eye(300, dtype=torch.float64)
    exact = kept_spread(kernel, 0.01)
    monkeypatch.setattr(du_module, "_EXACT_SPREAD_MAX_N", 100)  # the Hutchinson route from here on
    estimate = kept_spread(kernel, 0.01)
    assert estimate != exact and estimate == pytest.approx(exact, rel=0.01)
    assert kept_spread(kernel, 0.01) == estimate  # fixed probes: the same batch gives the same t


def test_constant_kernel_gives_constant_loss():
    kernel = torch.ones(6, 6, dtype=torch.float64)  # every centroid becomes the same mean
    for seed in range(3):
        value, grad = _value_and_grad(lambda x: decoupled_uniformity(x, kernel), _z(6, 3, seed=seed))
        assert value.item() == pytest.approx(0.0, abs=1e-10)
        assert grad.abs().max().item() < 1e-8


def test_y_aware_tiny_bandwidth_equals_nt_xent():
    z = _z(6, 3)
    y = torch.tensor([1.0, 2.0, 3.5, 4.0, 7.0, 9.0])
    torch.testing.assert_close(y_aware_infonce(z, y, sigma=1e-4), nt_xent(z), atol=1e-10, rtol=0)
    all_missing = torch.full((6,), float("nan"))
    torch.testing.assert_close(y_aware_infonce(z, all_missing, sigma=5.0), nt_xent(z), atol=1e-10, rtol=0)


def test_supcon_with_one_label_per_subject_equals_nt_xent():
    z = _z(5, 2)
    torch.testing.assert_close(supcon(z, torch.arange(5)), nt_xent(z), atol=1e-10, rtol=0)


def test_large_t_stays_finite_where_the_official_form_underflows():
    # orthonormal centroids: every squared distance is 2, so L = -2t exactly; exp(-1000) underflows
    z = torch.eye(4, dtype=torch.float64)[:, None, :].repeat(1, 2, 1).requires_grad_()
    t = 500.0
    assert torch.isinf(ref_official_du(z.detach(), t=t))
    value = decoupled_uniformity(z, t=t)
    assert value.item() == pytest.approx(-2 * t, abs=1e-9)
    (grad,) = torch.autograd.grad(value, z)
    assert torch.isfinite(grad).all()


LOSSES = {
    "du": lambda z: decoupled_uniformity(z),
    "kernel_du": lambda z: decoupled_uniformity(z, _rbf_kernel(z.shape[0]).float()),
    "simclr": lambda z: nt_xent(z),
    "y_aware": lambda z: y_aware_infonce(z, torch.linspace(0, 10, z.shape[0]), sigma=0.1),
    "dcl": lambda z: decoupled_contrastive(z),
    "align_uniform": lambda z: align_uniform(z),
    "supcon": lambda z: supcon(z, torch.arange(z.shape[0]) % 4),
}


def _aligned_subjects(method, g):
    """Per-subject embeddings (32, 1, 16) arranged the way the method's positives expect."""
    if method == "supcon":  # subjects of a class share a centre (labels = index % 4)
        return torch.randn(4, 1, 16, generator=g).repeat(8, 1, 1) + 0.05 * torch.randn(32, 1, 16, generator=g)
    return torch.randn(32, 1, 16, generator=g)


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_aligned_views_give_lower_loss_than_random_views(method):
    g = torch.Generator().manual_seed(0)
    aligned = _aligned_subjects(method, g) + 0.05 * torch.randn(32, 2, 16, generator=g)
    random_views = torch.randn(32, 2, 16, generator=g)
    assert LOSSES[method](aligned) < LOSSES[method](random_views)


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_float32_in_float32_out(method):
    z = torch.randn(6, 2, 4, requires_grad=True)
    value = LOSSES[method](z)
    value.backward()
    assert value.dtype == torch.float32 and value.shape == () and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_mixed_precision_runs_in_float32(method):
    z = torch.randn(6, 2, 4).to(torch.bfloat16)
    expected = LOSSES[method](z.float())
    torch.testing.assert_close(LOSSES[method](z), expected)  # half input is upcast exactly
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(LOSSES[method](z.float()), expected)  # autocast is switched off


# ---------------------------------------------------------------- modules and build_loss


def test_modules_forward_equals_functions():
    z = _z(6, 2)
    attributes = torch.tensor([[50.0, 0], [60, 1], [float("nan"), 1], [55, 0], [70, 1], [65, 0]])
    missing = torch.isnan(attributes)
    labels = torch.tensor([0, 1, 1, 0, 2, 2])
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1), KernelTerm("sex", "delta", 1, 2)]).fit(attributes, missing)
    expected = {
        "du": decoupled_uniformity(z, t=1.0),
        "kernel_du": decoupled_uniformity(z, kernel(attributes, missing), t=1.0, lam=0.1),
        "simclr": nt_xent(z, temperature=0.2),
        "y_aware": y_aware_infonce(z, attributes[:, 0], sigma=4.0, temperature=0.2),
        "dcl": decoupled_contrastive(z, temperature=0.2),
        "align_uniform": align_uniform(z, t=1.0),
        "supcon": supcon(z, labels, temperature=0.2),
        "supervised": view_cross_entropy(z[..., :3], labels),
    }
    options = {
        "du": {"t": 1.0},
        "kernel_du": {"kernel": kernel, "t": 1.0, "lam": 0.1},
        "simclr": {"temperature": 0.2},
        "y_aware": {"sigma": 4.0, "temperature": 0.2},
        "dcl": {"temperature": 0.2},
        "align_uniform": {"t": 1.0},
        "supcon": {"temperature": 0.2},
        "supervised": {"classes": 3},
    }
    assert set(METHODS) == set(expected)
    for method in METHODS:
        module = build_loss(method, **options[method])
        head = z[..., :3] if method == "supervised" else z  # its z is a 3-class head's logits
        got = module(head, attributes=attributes, missing=missing, labels=labels)
        torch.testing.assert_close(got, expected[method], atol=1e-12, rtol=0, msg=method)
    classes = {
        "du": DecoupledUniformityLoss,
        "kernel_du": KernelDecoupledUniformityLoss,
        "simclr": InfoNCELoss,
        "y_aware": YAwareInfoNCELoss,
        "dcl": DecoupledContrastiveLoss,
        "align_uniform": AlignUniformLoss,
        "supcon": SupConLoss,
        "supervised": SupervisedLoss,
    }
    assert all(isinstance(build_loss(m, **options[m]), classes[m]) for m in METHODS)


def test_supcon_module_accepts_float_integer_codes():
    z = _z(4, 2)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(SupConLoss()(z, labels=labels), supcon(z, labels.long()))


# ---------------------------------------------------------------- errors name the culprit


@pytest.mark.parametrize(
    ("call", "culprit"),
    [
        (lambda: decoupled_uniformity(torch.randn(4, 8)), "z: expected shape (n, V, d)"),
        (lambda: decoupled_uniformity(torch.randn(4, 1, 8)), "V >= 2"),
        (lambda: decoupled_uniformity(torch.randn(1, 2, 8)), "n >= 2"),
        (lambda: decoupled_uniformity([[1.0]]), "z: expected a torch.Tensor"),
        (lambda: decoupled_uniformity(torch.randn(4, 2, 3), torch.eye(3)), "kernel: expected shape (4, 4)"),
        (
            lambda: decoupled_uniformity(torch.randn(3, 2, 3), torch.tensor([[1.0, 0.9, 0], [0, 1, 0], [0, 0, 1]])),
            "kernel: expected a symmetric",
        ),
        (
            lambda: decoupled_uniformity(torch.randn(3, 2, 3), -torch.eye(3)),
            "kernel: expected a positive semi-definite",
        ),
        (lambda: decoupled_uniformity(torch.randn(3, 2, 3), torch.full((3, 3), float("nan"))), "kernel"),
        (lambda: decoupled_uniformity(torch.randn(3, 2, 3), t=0.0), "t: expected a finite number > 0"),
        (lambda: decoupled_uniformity(torch.randn(3, 2, 3), torch.eye(3), lam=-1), "lam: expected"),
        (lambda: kept_spread(torch.eye(3), lam=0.0), "lam: expected"),
        (lambda: kept_spread(-torch.eye(3), lam=0.1), "kernel: expected a positive semi-definite"),
        (lambda: nt_xent(torch.randn(3, 2, 3), temperature=-0.1), "temperature"),
        (lambda: y_aware_infonce(torch.randn(3, 2, 3), torch.ones(4), sigma=1.0), "y: expected shape (3,)"),
        (lambda: supcon(torch.randn(3, 2, 3), torch.ones(3)), "labels: expected integer"),
        (lambda: build_loss("simclrr"), "kernel_du, du, simclr, y_aware, dcl, align_uniform, supervised, supcon"),
        (lambda: build_loss("simclr", lam=0.1), "unknown option(s) lam"),
        (lambda: build_loss("y_aware"), "missing required option(s) sigma"),
        (lambda: build_loss("kernel_du"), "missing required option(s) kernel"),
        (lambda: YAwareInfoNCELoss(sigma=1.0)(torch.randn(3, 2, 3)), "attributes: y_aware needs"),
        (lambda: SupConLoss()(torch.randn(3, 2, 3)), "labels: supcon needs"),
        (
            lambda: SupConLoss()(torch.randn(3, 2, 3), labels=torch.tensor([0.5, 1, 2])),
            "labels: expected integer",
        ),
    ],
)
def test_errors_name_the_bad_argument(call, culprit):
    with pytest.raises(MedclInputError) as excinfo:
        call()
    assert culprit in str(excinfo.value)


def test_kernel_du_module_errors():
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1, bandwidth=1.0)])
    module = KernelDecoupledUniformityLoss(kernel)
    with pytest.raises(MedclInputError, match="attributes: kernel_du needs"):
        module(torch.randn(3, 2, 4))
    with pytest.raises(MedclInputError, match="attributes: expected 3 rows"):
        module(torch.randn(3, 2, 4), torch.randn(4, 1))
    with pytest.raises(MedclInputError, match="kernel: expected a fitted"):
        KernelDecoupledUniformityLoss("rbf")


def test_kernel_du_without_its_prior_is_plain_du():
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1, bandwidth=1.0)])
    module = KernelDecoupledUniformityLoss(kernel, t=2.0, lam=0.01)
    z, ages = _z(6, 2), torch.arange(6, dtype=torch.float64)[:, None]
    plain = float(decoupled_uniformity(z, t=2.0).detach())
    with_prior = float(module(z, ages).detach())
    module.use_prior = False
    assert float(module(z, ages).detach()) == pytest.approx(plain, rel=1e-12)
    assert with_prior != pytest.approx(plain, rel=1e-3)


# ---------------------------------------------------------------- SupCon instance mix, y-Aware sigma


@pytest.mark.parametrize("mix", [0.0, 0.3, 1.0])
def test_supcon_instance_mix_is_the_weighted_sum_of_supcon_and_nt_xent(mix):
    z = _z(5, 2)
    labels = torch.tensor([0, 1, 0, 1, 1])
    expected = (1 - mix) * ref_supcon(z, labels.tolist(), 0.5) + mix * ref_nt_xent(z, 0.5)
    got = supcon(z, labels, temperature=0.5, instance_mix=mix).detach()
    assert float(got) == pytest.approx(float(expected), rel=1e-10)
    module = build_loss("supcon", temperature=0.5, instance_mix=mix)
    assert float(module(z, labels=labels).detach()) == pytest.approx(float(expected), rel=1e-10)


def test_supcon_without_instance_mix_is_flat_when_labels_are_invisible():
    """The collapse found on the demo: with the label independent of the embedding, plain SupCon
    cannot beat the collapsed value log(nV - 1); the instance mix rewards spread-out embeddings."""
    # 16 subjects, both views equal, cosine c = 0.65 between any two subjects (label-blind)
    c = 0.65
    eye = torch.eye(17, dtype=torch.float64)
    z = (math.sqrt(c) * eye[0] + math.sqrt(1 - c) * eye[1:])[:, None, :].repeat(1, 2, 1)
    labels = torch.tensor([0, 1] * 8)
    collapsed = torch.ones(16, 2, 17, dtype=torch.float64)
    floor = math.log(16 * 2 - 1)
    assert float(supcon(collapsed, labels, temperature=0.1)) == pytest.approx(floor)
    # hand-computed: LSE = log(e^10 + 30 e^6.5); SupCon's positives: the own view (10) + 14 at 6.5
    lse = math.log(math.exp(10) + 30 * math.exp(6.5))
    plain = lse - (10 + 14 * 6.5) / 15
    assert float(supcon(z, labels, temperature=0.1)) == pytest.approx(plain)
    assert plain > floor - 0.05  # no better than the collapse: nothing keeps the scans apart ...
    mixed = 0.5 * plain + 0.5 * (lse - 10)
    assert float(supcon(z, labels, temperature=0.1, instance_mix=0.5)) == pytest.approx(mixed)
    assert mixed < floor - 1.0  # ... the instance term makes the spread-out embedding far better


@pytest.mark.parametrize("mix", [-0.1, 1.5, "a lot"])
def test_supcon_instance_mix_outside_0_1_is_refused(mix):
    with pytest.raises(MedclInputError, match="instance_mix"):
        supcon(_z(4, 2), torch.tensor([0, 1, 0, 1]), instance_mix=mix)


def test_y_aware_sigma_rule_on_values():
    from medcl.losses.y_aware import y_aware_sigma

    ages = [20.0, 30.0, 40.0, 50.0, float("nan")]  # std (ddof=1) of 20..50 = sqrt(500/3)
    assert y_aware_sigma(ages) == pytest.approx(0.25 * math.sqrt(500 / 3))
    assert y_aware_sigma(ages, scale=1.0) == pytest.approx(math.sqrt(500 / 3))
    # the paper's setting: 5 years on a cohort aged 32 +- 19 years is about this rule
    assert 5.0 / 19.0 == pytest.approx(0.25, abs=0.02)
    with pytest.raises(MedclInputError, match="constant"):
        y_aware_sigma([61.0, 61.0, 61.0])
    with pytest.raises(MedclInputError, match="at least 2"):
        y_aware_sigma([61.0, float("nan")])
