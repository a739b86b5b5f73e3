"""A run, a probe and a report from a cohort whose ids look like names and whose ages are
distinctive: none of those ids or ages may appear in report.html, kernel.json or config.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _pretrain_helpers import cli, write_config

from medcl.data.synthetic import generate_cohort
from medcl.pretrain.run_dir import RunDir

FIRST = ["Jane", "John", "Maria", "Ahmed", "Wei", "Olga", "Kwame", "Lucia"]
LAST = ["Doe", "Smith", "Garcia", "Haddad", "Zhang", "Ivanova", "Mensah", "Rossi"]


@pytest.fixture(scope="module")
def named_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], np.ndarray]:
    """40 PNG subjects; subject ids 'Firstname_Lastname_NN', patient ids 'MRN-...', ages with 6 decimals."""
    manifest = generate_cohort(tmp_path_factory.mktemp("named"), dims=2, subjects=40, size=32, seed=0,
                               image_format="png")
    table_path = manifest.parent / "participants.csv"
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    patients = {p: f"MRN-{7300411 + 97 * i}-{LAST[i % 8]}" for i, p in enumerate(dict.fromkeys(table["patient_id"]))}
    table["patient_id"] = table["patient_id"].map(patients)
    table["subject_id"] = [f"{FIRST[i % 8]}_{LAST[(i // 8) % 8]}_{i:02d}" for i in range(len(table))]
    ages = np.round(np.random.default_rng(7).uniform(21, 89, len(table)) + 0.123457, 6)
    table["age"] = [f"{a:.6f}" for a in ages]
    table.to_csv(table_path, index=False)
    return manifest, [*table["subject_id"], *patients.values()], ages


def _leaks(text: str, ids: list[str], ages: np.ndarray) -> list[str]:
    found = [i for i in ids if i in text]
    for age in ages:  # the value as written in the table, and shortened the usual ways
        found += [form for form in {f"{age:.6f}", f"{age:.4f}", f"{age:.3f}", repr(float(age))} if form in text]
    return found


@pytest.mark.parametrize("method", ["kernel_du", "simclr"])
def test_run_and_report_hold_no_subject_id_or_age(named_cohort, tmp_path: Path, method: str) -> None:
    manifest, ids, ages = named_cohort
    config = write_config(tmp_path, manifest, method=method, attributes=["age", "sex"], epochs=1, batch_size=8)
    out = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", out]) == 0
    run = RunDir(out)
    split = pd.read_csv(run.split_path, dtype=str)
    assert set(split["subject_id"]) | set(split["patient_id"]) == set(ids)  # ids stay in split.csv only
    assert cli(["probe", out, "--manifest", manifest, "--label", "diagnosis", "--folds", "2"]) == 0
    assert cli(["report", out, "--out", out / "report.html"]) == 0

    report = (out / "report.html").read_text()
    assert "Resolved config" in report and "diagnosis" in report  # the report was really filled in
    assert _leaks(report, ids, ages) == []
    assert _leaks(run.config_path.read_text(), ids, ages) == []
    if method == "kernel_du":
        kernel = run.kernel_path.read_text()
        assert _leaks(kernel, ids, ages) == []
        reference = json.loads(kernel)["fitted"]["references"]["age"]
        n_train = int((split["split"] == "train").sum())
        assert len(reference["points"]) == n_train // 10  # group means of >= 10 subjects, not 40 ages
        assert "summary points; not shown" in report and '"points"' not in report
        assert yaml.safe_load(run.config_path.read_text())["kernel"] == json.loads(kernel)
    else:  # simclr never uses the attributes: no kernel, no reference at all
        assert not run.kernel_path.exists() and yaml.safe_load(run.config_path.read_text())["kernel"] is None
    for other in out.rglob("*"):  # nothing else in the run directory but split.csv holds an id either
        if other.is_file() and other.suffix in (".json", ".yaml", ".csv", ".html") and other.name != "split.csv":
            assert [i for i in ids if i in other.read_text(errors="replace")] == [], other
