"""RunDir is the one place that spells a run directory's file names."""

from __future__ import annotations

import ast
from pathlib import Path

from medcl.pretrain.run_dir import RunDir

PACKAGE = Path(__file__).resolve().parents[2] / "medcl"
#: the same spelling for something else: Lightning's CSV log file, a comparison folder's summary
NOT_RUN_FILES = {("pretrain/callbacks.py", "metrics.csv"), ("evaluate/compare/engine.py", "summary.json"),
                 ("cli/evaluate_commands.py", "summary.json")}


def test_run_file_names_are_spelled_in_run_dir_only() -> None:
    names = {v for k, v in vars(RunDir).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"config.yaml", "split.csv", "encoder.safetensors", "encoder.json", "kernel.json"} <= names
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "pretrain/run_dir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names and (rel, node.value) not in NOT_RUN_FILES:
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert found == [], "use RunDir's names instead"
