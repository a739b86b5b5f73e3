"""Training health: spread and effective rank against independent computations, collapse values of
the losses, the monitor's verdict and warning, and a real run built to collapse."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _pretrain_helpers import cli, write_config

from medcl.losses import build_loss
from medcl.pretrain.health import (
    HealthMonitor,
    diagnose,
    effective_rank,
    projection_spread,
)
from medcl.pretrain.run_dir import RunDir


def _numpy_effective_rank(x: np.ndarray) -> float:
    """Roy & Vetterli's effective rank of the L2-normalised rows, written out with numpy."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    p = p[p > 1e-300]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_identical_embeddings_have_no_spread_and_rank_one() -> None:
    z = torch.tensor([0.3, -1.2, 2.0, 0.5]).repeat(10, 1)
    assert projection_spread(z) == pytest.approx(0.0, abs=1e-12)
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-9)
    # same direction, different lengths: still one point after normalisation
    scaled = z * torch.arange(1, 11, dtype=torch.float32)[:, None]
    assert projection_spread(scaled) == pytest.approx(0.0, abs=1e-6)
    assert effective_rank(scaled) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("d", [2, 5, 16])
def test_orthogonal_embeddings_have_full_rank_and_the_hand_computed_spread(d: int) -> None:
    z = 3.0 * torch.eye(d)  # d orthogonal unit directions
    assert effective_rank(z) == pytest.approx(d, rel=1e-9)
    # each column holds one 1 and d-1 zeros: population std sqrt(d-1)/d, times sqrt(d)
    assert projection_spread(z) == pytest.approx(math.sqrt((d - 1) / d), rel=1e-9)


def test_antipodal_pair_and_random_batches_match_numpy() -> None:
    pair = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    # column 0 is +-1 (std 1), the others 0: mean std 1/3, times sqrt(3)
    assert projection_spread(pair) == pytest.approx(1 / math.sqrt(3))
    assert effective_rank(pair) == pytest.approx(1.0)  # one direction (uncentred)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 2, 8, generator=gen)  # (n, V, d): views are flattened
    flat = z.reshape(12, 8).numpy().astype(np.float64)
    normed = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    assert projection_spread(z) == pytest.approx(np.sqrt(8) * normed.std(axis=0).mean(), rel=1e-9)
    assert effective_rank(z) == pytest.approx(_numpy_effective_rank(flat), rel=1e-9)
    assert effective_rank(z) > 0.75 * 8  # 12 isotropic points in 8 dimensions: close to full rank


@pytest.mark.parametrize(("method", "options", "expected"), [
    ("simclr", {}, math.log(6 * 2 - 1)),
    ("supcon", {}, math.log(6 * 2 - 1)),
    ("supcon", {"instance_mix": 0.5}, math.log(6 * 2 - 1)),
    ("y_aware", {"sigma": 2.0}, math.log(6 * 2 - 1)),
    ("dcl", {}, math.log(6 * 2 - 2)),
    ("du", {}, 0.0),
    ("align_uniform", {}, 0.0),
])
def test_collapse_value_is_the_loss_of_identical_embeddings(method: str, options: dict, expected: float) -> None:
    loss = build_loss(method, **options)
    z = torch.tensor([0.2, -0.7, 1.1]).repeat(6, 2, 1)  # 6 subjects x 2 views, all the same vector
    value = loss(z, attributes=torch.arange(6.0)[:, None], labels=torch.tensor([0, 1, 0, 1, 1, 0]))
    assert loss.collapse_value(6, 2) == pytest.approx(expected)
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_diagnose_names_each_sign_of_collapse() -> None:
    assert diagnose(0.8, 12.0, 3.1, math.log(63)) is None
    assert "spread" in diagnose(0.001, 12.0, 3.1, math.log(63))
    assert "effective rank" in diagnose(0.8, 1.01, 3.1, math.log(63))
    stuck = diagnose(0.8, 12.0, 4.1428, math.log(63))
    assert "collapse value 4.1431" in stuck
    assert diagnose(0.8, 12.0, 4.133, math.log(63)) is None  # the healthy y-Aware run on the demo: 0.010 below
    assert diagnose(0.8, 12.0, 4.1428, None) is None  # no collapse value known: loss not checked


def test_monitor_warns_once_after_the_warm_up_and_reports_the_last_epoch(caplog) -> None:
    monitor = HealthMonitor("supcon", collapse_loss=math.log(63))
    with caplog.at_level(logging.WARNING, logger="medcl.pretrain"):
        monitor.update(0, 0.01, 1.0, 4.1431)  # the first epoch may look collapsed: no warning yet
        assert not caplog.records
        monitor.update(1, 0.01, 1.0, 4.1431)
        monitor.update(2, 0.01, 1.0, 4.1431)
    assert len(caplog.records) == 1 and len(monitor.warnings) == 1
    assert "supcon run collapsed at epoch 2" in caplog.records[0].getMessage()
    assert "supcon_instance_mix" in caplog.records[0].getMessage()
    verdict = monitor.verdict().to_dict()
    assert verdict["collapsed"] is True and "spread" in verdict["reason"]
    assert verdict["spread"] == 0.01 and verdict["effective_rank"] == 1.0

    recovered = HealthMonitor("simclr", collapse_loss=math.log(63))
    recovered.update(0, 0.01, 1.0, 4.1431)
    recovered.update(1, 0.6, 9.0, 3.2)
    assert recovered.verdict().to_dict() == {"collapsed": False, "reason": None, "spread": 0.6,
                                             "effective_rank": 9.0, "warnings": []}


def test_a_run_built_to_collapse_is_flagged_warned_and_shown(synthetic_2d_manifest: Path, tmp_path: Path,
                                                            caplog, capsys) -> None:
    """A one-dimensional projection has a single direction: effective rank 1 at every step."""
    config = write_config(tmp_path, synthetic_2d_manifest, method="simclr", projection={"hidden": 16, "dim": 1},
                          progress_bar=True)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="medcl.pretrain"):
        assert cli(["pretrain", "--config", config, "--out", out]) == 0
    printed = capsys.readouterr()
    assert "training health: COLLAPSED" in printed.err
    warnings = [r.getMessage() for r in caplog.records if r.name == "medcl.pretrain"]
    assert any("simclr run collapsed at epoch 2" in w and "effective rank" in w for w in warnings)

    run = RunDir(out)
    health = json.loads(run.summary_path.read_text())["health"]
    assert set(health) == {"collapsed", "reason", "spread", "effective_rank", "warnings"}
    assert health["collapsed"] is True
    assert health["effective_rank"] == pytest.approx(1.0)
    assert "effective rank" in health["reason"] and len(health["warnings"]) == 1
    metrics = run.metrics()
    assert metrics["health/effective_rank"].dropna().tolist() == pytest.approx([1.0, 1.0])
    assert metrics["health/spread"].notna().sum() == 2

    # stdout is not a terminal under pytest: plain progress lines with rate and ETA, one per epoch
    lines = [line for line in printed.out.splitlines() if line.startswith("[")]
    assert any("epoch 1/2" in line and "ETA" in line for line in lines)
    assert any("epoch 2/2" in line and "done" in line and "loss" in line for line in lines)

    from medcl.report import render_report

    page = render_report([out], tmp_path / "report.html").read_text()
    assert "collapsed: " in page and "effective rank" in page


def test_a_cross_entropy_run_stuck_at_log_classes_is_flagged_with_its_own_advice(caplog) -> None:
    loss = build_loss("supervised", classes=3)
    stuck = float(loss(torch.zeros(32, 2, 3), labels=torch.arange(32) % 3))  # a constant (uniform) prediction
    assert stuck == pytest.approx(math.log(3))
    monitor = HealthMonitor("supervised", collapse_loss=loss.collapse_value(32, 2))
    with caplog.at_level(logging.WARNING, logger="medcl.pretrain"):
        monitor.update(0, 0.7, 9.0, stuck)
        monitor.update(1, 0.7, 9.0, stuck + 0.001)  # spread and rank look fine: the loss alone tells
    verdict = monitor.verdict()
    assert verdict.collapsed and "collapse value 1.0986" in verdict.reason
    message = caplog.records[0].getMessage()
    assert "supervised run collapsed" in message and "label is visible" in message
    assert "supcon_instance_mix" not in message
    learning = HealthMonitor("supervised", collapse_loss=loss.collapse_value(32, 2))
    learning.update(1, 0.7, 9.0, 0.9)
    assert not learning.verdict().collapsed
