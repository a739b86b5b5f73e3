"""The embedded demo: the comparison's arithmetic and a tiny end-to-end run of every arm."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from medcl.demo import BASELINE, METHOD_NAMES, DemoResult, DemoSettings, run_demo
from medcl.errors import MedclInputError


def _result(rows: list[tuple[str, int, float, float]]) -> DemoResult:
    settings = DemoSettings(methods=["du", "kdu_age"], seeds=2)
    return DemoResult(
        out=Path("."),
        settings=settings,
        rows=[{"method": m, "seed": s, "auc": auc, "bacc": auc, "mae": mae, "r2": 0.0} for m, s, auc, mae in rows],
    )


def test_summary_pairs_each_seed_with_the_baseline() -> None:
    result = _result([
        ("du", 0, 0.60, 10.0), ("du", 1, 0.70, 12.0),
        ("kdu_age", 0, 0.65, 9.0), ("kdu_age", 1, 0.80, 12.5),
    ])
    by_method = {e["method"]: e for e in result.summary()}
    kdu = by_method["kdu_age"]
    assert kdu["auc"] == pytest.approx(0.725)
    assert kdu["auc_sd"] == pytest.approx(np.std([0.65, 0.80], ddof=1))
    # paired differences: +0.05 and +0.10
    assert kdu["d_auc"] == pytest.approx(0.075)
    assert kdu["d_auc_sd"] == pytest.approx(np.std([0.05, 0.10], ddof=1))
    assert kdu["d_auc_wins"] == 2
    # MAE: lower is better, -1.0 and +0.5 -> one win
    assert kdu["d_mae"] == pytest.approx(-0.25)
    assert kdu["d_mae_wins"] == 1
    assert by_method[BASELINE]["d_auc"] == 0.0
    table = result.table()
    assert "kdu_age" in table and "+0.075" in table


def test_settings_refuse_unknown_methods_and_a_missing_baseline() -> None:
    """Through the CLI's presets these are input errors (exit 2) that name the method."""
    with pytest.raises(MedclInputError, match="nope"):
        DemoSettings.preset("default", methods=["du", "nope"])
    with pytest.raises(MedclInputError, match="'du'"):
        DemoSettings.preset("quick", methods=["simclr"])
    with pytest.raises(MedclInputError, match="preset"):
        DemoSettings.preset("huge")
    with pytest.raises(ValueError, match="nope"):  # pydantic's ValidationError for Python users
        DemoSettings(methods=["du", "nope"])


@pytest.mark.timeout(400)
def test_tiny_demo_runs_every_arm_and_writes_the_report(tmp_path: Path) -> None:
    settings = DemoSettings(
        subjects=48, size=16, seeds=1, epochs=1, batch_size=8, widths=[4, 4, 8, 8], vae_epochs=1,
        probe_folds=2,
    )
    calls: list[tuple[str, int, int]] = []
    result = run_demo(tmp_path, settings, on_progress=lambda d, i, n: calls.append((d, i, n)))

    assert [r["method"] for r in result.rows] == list(METHOD_NAMES)
    for row in result.rows:
        assert 0.0 <= row["auc"] <= 1.0 and row["mae"] >= 0.0
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(METHOD_NAMES)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {e["method"] for e in summary["summary"]} == set(METHOD_NAMES)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png") >= 3 and "kdu_age" in page
    # the VAE prior became an embedding attribute of the cohort, and kernel DU used it
    kdu_vae = tmp_path / "runs" / "kdu_vae" / "seed0"
    assert "vae" in (kdu_vae / "config.yaml").read_text()
    assert (kdu_vae / "kernel_batch.npy").is_file()
    # progress was reported for every step, ending complete
    assert calls[-1][1] == calls[-1][2] and len(calls) == len(METHOD_NAMES) + 3
    # no subject or patient identifier reaches the report
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    rows = (tmp_path / "cohort" / "participants.csv").read_text().splitlines()[1:]
    ids = {value for line in rows for value in line.split(",")[:2]}
    assert ids and not any(i in text for i in ids)

    # a second call reuses the finished runs (same numbers, no retraining)
    again = run_demo(tmp_path, settings)
    assert [r["auc"] for r in again.rows] == [r["auc"] for r in result.rows]
