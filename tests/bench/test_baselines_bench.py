"""bench/baselines.py: each method's cells sweep the key its loss reads, and the table shows every seed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("medcl_bench_baselines", BENCH / "baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_method_sweeps_the_temperature_its_loss_reads(tmp_path: Path) -> None:
    bench = _load()
    command = bench.cell_command(Path("m.yaml"), Path("c.yaml"), tmp_path / "cell", "y_aware:age", 0.2, 1.0, 2, [])
    assert command[command.index("--methods") + 1] == "y_aware:age"
    sets = [command[i + 1] for i, a in enumerate(command) if a == "--set"]
    assert sets == ["loss.temperature=0.2", "augmentation.strength=1.0"]
    assert bench.temperature_key("align_uniform") == "loss.t"  # it has no loss.temperature
    assert bench.temperature_key("dcl") == "loss.temperature"
    assert bench.cell_folder(tmp_path, "y_aware:age", 0.2, 1.0) == tmp_path / "y_aware-age" / "t0.2_s1"


def test_a_cell_reports_every_seed_and_the_table_shows_them(tmp_path: Path) -> None:
    bench = _load()
    entry = {"arm": "dcl", "label": "diagnosis", "mean": 0.8, "sd": 0.1, "seeds": 2, "collapsed": False}
    (tmp_path / "summary.json").write_text(json.dumps({"summary": [entry, {**entry, "label": "age"}]}))
    pd.DataFrame({"arm": ["dcl", "dcl", "dcl"], "label": ["diagnosis", "diagnosis", "age"], "seed": [1, 0, 0],
                  "value": [0.871, 0.729, 9.0]}).to_csv(tmp_path / "results.csv", index=False)
    result = bench.cell_result(tmp_path, "dcl")
    assert result["per_seed"] == [0.729, 0.871]  # seed order, diagnosis only
    assert bench.cell_result(tmp_path / "missing", "dcl") is None
    table = bench.table({(0.1, 0.5): result, (0.1, 1.0): None}, [0.1], [0.5, 1.0])
    assert "| 0.1 | 0.800 ± 0.100 (.729 / .871) | – |" in table


def test_the_dry_run_estimate_follows_the_first_stride(tmp_path: Path) -> None:
    """3D at first_stride 2 costs about a twelfth of first_stride 1: the estimate reads the override."""
    bench = _load()
    config = tmp_path / "base.yaml"
    config.write_text("encoder:\n  first_stride: 1\n")
    assert bench.first_stride([], config) == 1
    assert bench.first_stride(["encoder.first_stride=2", "epochs=3"], config) == 2
    assert bench.first_stride([], tmp_path / "missing.yaml") == 1
    config.write_text("encoder:\n  first_stride: 2\n")
    assert bench.first_stride([], config) == 2
