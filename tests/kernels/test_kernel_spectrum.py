"""The prior's instance term, bandwidth scale and batch-spectrum diagnostic, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medcl.errors import MedclInputError
from medcl.kernels import KernelTerm, PriorKernel
from medcl.kernels.spectrum import batch_spectrum, spectrum_table, spectrum_warning
from medcl.losses import decoupled_uniformity
from medcl.pretrain.config import resolve_lam

BINARY = [KernelTerm("sex", "delta", 0, 1)]


def test_instance_weight_mixes_the_kernel_with_the_identity() -> None:
    values = np.array([[0.0], [1.0], [0.0], [1.0], [0.0]])
    plain = PriorKernel(BINARY).fit(values)(values)
    mixed = PriorKernel(BINARY, instance_weight=0.25).fit(values)(values)
    expected = 0.75 * plain + 0.25 * torch.eye(5)
    torch.testing.assert_close(mixed, expected)
    assert torch.allclose(mixed.diagonal(), torch.ones(5, dtype=mixed.dtype))  # unit diagonal is kept
    assert mixed[0, 2] == pytest.approx(0.75) and mixed[0, 1] == 0
    identity = PriorKernel(BINARY, instance_weight=1.0).fit(values)(values)
    torch.testing.assert_close(identity, torch.eye(5, dtype=identity.dtype))


def test_instance_weight_one_is_plain_du_with_a_rescaled_temperature() -> None:
    # K = I gives mu_hat = mu / (1 + lam): DU with t / (1 + lam)^2 (an independent closed form).
    z = torch.randn(6, 2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = np.array([[0.0], [1.0], [0.0], [1.0], [1.0], [0.0]])
    kernel = PriorKernel(BINARY, instance_weight=1.0).fit(values)(np.asarray(values, np.float64))
    lam, t = 0.3, 2.0
    got = decoupled_uniformity(z, kernel, t=t, lam=lam)
    want = decoupled_uniformity(z, None, t=t / (1 + lam) ** 2)
    assert float(got) == pytest.approx(float(want), abs=1e-10)


def test_instance_term_keeps_the_kernel_psd_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    values = np.c_[rng.normal(50, 10, 40), rng.integers(0, 2, 40)].astype(np.float64)
    values[3, 0] = np.nan
    terms = [KernelTerm("age", "rbf", 0, 1), KernelTerm("sex", "delta", 1, 2)]
    kernel = PriorKernel(terms, instance_weight=0.05, bandwidth_scale=0.5).fit(values)
    k = kernel(values)
    assert float(torch.linalg.eigvalsh(k).min()) >= 0.05 - 1e-9  # the identity share lifts every eigenvalue
    again = PriorKernel.from_dict(kernel.to_dict())
    torch.testing.assert_close(again(values), k)
    assert again.instance_weight == 0.05 and again.bandwidth_scale == 0.5


def test_bandwidth_scale_multiplies_the_median_heuristic() -> None:
    values = np.array([[0.0], [1.0], [3.0]])  # distances 1, 2, 3: median 2
    terms = [KernelTerm("age", "rbf", 0, 1)]
    assert PriorKernel(terms).fit(values).bandwidths["age"] == pytest.approx(2.0)
    assert PriorKernel(terms, bandwidth_scale=0.25).fit(values).bandwidths["age"] == pytest.approx(0.5)
    given = [KernelTerm("age", "rbf", 0, 1, bandwidth=7.0)]
    assert PriorKernel(given, bandwidth_scale=0.25).fit(values).bandwidths["age"] == 7.0  # given: as is


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.1", True])
def test_instance_weight_must_be_in_the_unit_interval(bad: object) -> None:
    with pytest.raises(MedclInputError, match="instance_weight"):
        PriorKernel(BINARY, instance_weight=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1.0, float("inf")])
def test_bandwidth_scale_must_be_positive(bad: float) -> None:
    with pytest.raises(MedclInputError, match="bandwidth_scale"):
        PriorKernel(BINARY, bandwidth_scale=bad)


def test_resolve_lam() -> None:
    assert resolve_lam(0.05, 32) == 0.05
    assert resolve_lam("inv_sqrt_batch", 64) == pytest.approx(0.125)
    for bad in ("sqrt", 0.0, -1.0, True):
        with pytest.raises(MedclInputError, match=r"loss\.lam"):
            resolve_lam(bad, 32)  # type: ignore[arg-type]


def test_spectrum_of_a_delta_kernel_is_its_class_counts() -> None:
    # A delta kernel on a binary attribute: eigenvalues n0, n1 and n - 2 zeros.
    values = np.array([[0.0]] * 6 + [[1.0]] * 4)
    lam = 0.5
    row = batch_spectrum(PriorKernel(BINARY).fit(values), values, None, batch_size=10, lam=lam, batches=3)
    assert row.batch_size == 10 and row.batches == 3
    assert row.eigenvalues_above_lam == 2.0
    assert row.retained_fraction == pytest.approx((6 / 6.5 + 4 / 4.5) / 10)
    w = 0.2  # with the instance term: (1-w) n_c + w on the class directions, w on the others
    row = batch_spectrum(PriorKernel(BINARY, instance_weight=w).fit(values), values, None, batch_size=10,
                         lam=lam, batches=1)
    e = np.array([0.8 * 6 + w, 0.8 * 4 + w] + [w] * 8)
    assert row.retained_fraction == pytest.approx(float(np.mean(e / (e + lam))))
    assert row.kept_spread == pytest.approx(float(np.mean((e / (e + lam)) ** 2)))
    assert row.instance_weight == w


def test_identity_kernel_keeps_the_whole_batch() -> None:
    values = np.random.default_rng(1).normal(size=(50, 1))
    kernel = PriorKernel([KernelTerm("x", "rbf", 0, 1)], instance_weight=1.0).fit(values)
    row = batch_spectrum(kernel, values, None, batch_size=16, lam=0.01, batches=4, seed=3)
    assert row.eigenvalues_above_lam == 16
    assert row.retained_fraction == pytest.approx(1 / 1.01)


def test_a_scalar_kernel_keeps_less_of_larger_batches() -> None:
    values = np.random.default_rng(2).uniform(20, 90, size=(400, 1))
    kernel = PriorKernel([KernelTerm("age", "rbf", 0, 1)]).fit(values)
    small = batch_spectrum(kernel, values, None, batch_size=32, lam=0.01, batches=4)
    large = batch_spectrum(kernel, values, None, batch_size=256, lam=0.01, batches=2)
    assert large.eigenvalues_above_lam < 2 * small.eigenvalues_above_lam  # rank barely grows...
    assert large.retained_fraction < small.retained_fraction / 3  # ...so the retained share collapses


def test_spectrum_warning_says_what_to_change() -> None:
    values = np.array([[0.0]] * 16 + [[1.0]] * 16)
    low = batch_spectrum(PriorKernel(BINARY).fit(values), values, None, batch_size=32, lam=0.01)
    message = spectrum_warning(low)
    assert message is not None and "instance_weight" in message and "32" in message
    fixed = batch_spectrum(PriorKernel(BINARY, instance_weight=0.01).fit(values), values, None,
                           batch_size=32, lam=0.01)
    assert fixed.retained_fraction > 0.45 and spectrum_warning(fixed) is None
    table = spectrum_table([low], [fixed])
    assert "retained (w=0.01)" in table and f"{low.retained_fraction:.2f}" in table
    assert "spread kept (w=0.01)" in table and f"{fixed.kept_spread:.2f}" in table.splitlines()[1]


def test_batch_spectrum_needs_two_subjects() -> None:
    with pytest.raises(MedclInputError, match="at least 2"):
        batch_spectrum(PriorKernel(BINARY).fit(np.zeros((1, 1))), np.zeros((1, 1)), None, batch_size=8, lam=0.1)


def test_cli_default_instance_weight_and_bandwidth_rule_match_the_config() -> None:
    from medcl.cli import evaluate_commands as cli
    from medcl.kernels.vocabulary import DEFAULT_BANDWIDTH_RULE, DEFAULT_INSTANCE_WEIGHT
    from medcl.pretrain.config import PriorOptions

    assert cli.DEFAULT_INSTANCE_WEIGHT == DEFAULT_INSTANCE_WEIGHT == PriorOptions().instance_weight
    assert math.isfinite(cli.DEFAULT_INSTANCE_WEIGHT)
    assert cli.DEFAULT_BANDWIDTH_RULE == DEFAULT_BANDWIDTH_RULE == PriorOptions().bandwidth_rule


def test_pretraining_writes_the_spectrum_and_warns_about_a_low_rank_prior(
    synthetic_3d_manifest, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from _pretrain_helpers import cli, write_config

    from medcl.pretrain.run_dir import RunDir

    # A single binary attribute without the instance term keeps 2 of 12 directions: a warning.
    low = write_config(tmp_path, synthetic_3d_manifest, method="kernel_du", attributes=["sex"], epochs=1,
                       batch_size=12, prior={"instance_weight": 0.0}, loss={"lam": "inv_sqrt_batch"})
    with caplog.at_level("WARNING", logger="medcl.pretrain"):
        assert cli(["pretrain", "--config", low, "--out", tmp_path / "low"]) == 0
    run = RunDir(tmp_path / "low")
    spectrum = json.loads(run.spectrum_path.read_text())
    assert spectrum["run"]["batch_size"] == 12 and spectrum["run"]["lam"] == pytest.approx(12**-0.5, abs=1e-4)
    assert spectrum["run"]["eigenvalues_above_lam"] <= 2.0
    assert "instance_weight" in spectrum["warning"]
    assert any("instance_weight" in r.getMessage() for r in caplog.records)
    assert run.config().loss.lam == pytest.approx(12**-0.5)  # 'inv_sqrt_batch' resolved to 1/sqrt(12)
    assert run.summary()["prior_spectrum"]["run"] == spectrum["run"]

    # The default prior keeps an instance term: saved in the kernel, and no warning.
    caplog.clear()
    ok = write_config(tmp_path, synthetic_3d_manifest, method="kernel_du", attributes=["sex", "age"], epochs=1,
                      batch_size=12)
    with caplog.at_level("WARNING", logger="medcl.pretrain"):
        assert cli(["pretrain", "--config", ok, "--out", tmp_path / "ok"]) == 0
    run = RunDir(tmp_path / "ok")
    kernel = run.kernel()
    assert kernel.instance_weight == PriorOptionsDefault()
    assert json.loads(run.spectrum_path.read_text())["warning"] is None
    assert [t["name"] for t in json.loads(run.spectrum_path.read_text())["attributes"]] == ["sex", "age"]
    assert not [r for r in caplog.records if "instance_weight" in r.getMessage()]


def PriorOptionsDefault() -> float:
    from medcl.pretrain.config import PriorOptions

    return PriorOptions().instance_weight


def test_the_config_bandwidth_rule_reaches_the_run_kernel(synthetic_3d_manifest) -> None:
    from medcl.pretrain.config import parse_config
    from medcl.pretrain.loop import prepare

    def kernel(rule: str) -> PriorKernel:
        raw = {"manifest": str(synthetic_3d_manifest), "method": "kernel_du", "attributes": ["score1", "score2"],
               "encoder": {"arch": "resnet10", "widths": [4, 4, 8, 8]}, "batch_size": 8,
               "prior": {"bandwidth_rule": rule}}
        return prepare(parse_config(raw)).kernel

    per, joint = kernel("per_attribute"), kernel("joint")
    assert joint.bandwidth_rule == "joint" and per.bandwidth_rule == "per_attribute"
    assert all(joint.bandwidths[n] > 1.2 * per.bandwidths[n] for n in ("score1", "score2"))
