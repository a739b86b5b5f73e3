"""bench/gpu.py, the script prepared for a lent GPU, runs end to end at tiny sizes on the CPU."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"medcl_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_runs_tiny_and_prints_its_summary_line(tmp_path, capsys):
    line = _load("gpu").main(["--tiny", "--steps", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert line.startswith("gpu-bench cpu size=16 batch=4 bf16: step efficiency ") and line in out
    efficiency = float(re.search(r"step efficiency ([0-9.]+)", line).group(1))
    assert efficiency > 0
    # medcl's kernel DU and the paper's plain formula agree on the bench's inputs
    assert float(re.search(r"\|difference\| ([0-9.e+-]+)", out).group(1)) < 1e-4
    assert "preprocessed 12 of 12 scan(s)" in out
