"""A run, a probe and a report from a cohort whose ids look like names and whose ages are
distinctive: none of those ids or ages may appear in report.html or config.yaml (which holds the fitted kernel)."""

from __future__ import annotations

import json
import re
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


def _renamed_cohort(folder: Path, size: int, seed: int, patient, subject) -> tuple[Path, pd.DataFrame, dict]:
    """A 40-subject PNG cohort whose i-th patient id is ``patient(i)`` and i-th subject id ``subject(i)``."""
    manifest = generate_cohort(folder, dims=2, subjects=40, size=size, seed=seed, image_format="png")
    table = pd.read_csv(manifest.parent / "participants.csv", dtype=str, keep_default_na=False)
    patients = {p: patient(i) for i, p in enumerate(dict.fromkeys(table["patient_id"]))}
    table["patient_id"] = table["patient_id"].map(patients)
    table["subject_id"] = [subject(i) for i in range(len(table))]
    return manifest, table, patients


@pytest.fixture(scope="module")
def named_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], np.ndarray]:
    """40 PNG subjects; subject ids 'Firstname_Lastname_NN', patient ids 'MRN-...', ages with 6 decimals."""
    manifest, table, patients = _renamed_cohort(
        tmp_path_factory.mktemp("named"), 32, 0, lambda i: f"MRN-{7300411 + 97 * i}-{LAST[i % 8]}",
        lambda i: f"{FIRST[i % 8]}_{LAST[(i // 8) % 8]}_{i:02d}")
    table_path = manifest.parent / "participants.csv"
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
    assert not run.kernel_path.exists()  # the fitted kernel is stored once, in config.yaml
    if method == "kernel_du":
        kernel = run.kernel_dict()
        assert kernel == yaml.safe_load(run.config_path.read_text())["kernel"]
        reference = kernel["fitted"]["references"]["age"]
        n_train = int((split["split"] == "train").sum())
        assert len(reference["points"]) == n_train // 10  # group means of >= 10 subjects, not 40 ages
        assert "summary points; not shown" in report and '"points"' not in report
    else:  # simclr never uses the attributes: no kernel, no reference at all
        assert run.kernel_dict() is None and yaml.safe_load(run.config_path.read_text())["kernel"] is None
    for other in out.rglob("*"):  # nothing else in the run directory but split.csv holds an id either
        if other.is_file() and other.suffix in (".json", ".yaml", ".csv", ".html") and other.name != "split.csv":
            assert [i for i in ids if i in other.read_text(errors="replace")] == [], other


# -- every artefact of a run, a comparison, a report and each export format ---------------------

RARE_CATEGORY = "RAREWARDXQZ"


@pytest.fixture(scope="module")
def distinctive_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """40 tiny PNG subjects with ids 'PATIENTXQZ0001'..., ages ~40.0123 + 0.37 i, and a ward held
    by one subject; returns the manifest and every string that must not leave (ids, ages, ward)."""
    manifest, table, patients = _renamed_cohort(tmp_path_factory.mktemp("distinct"), 16, 1,
                                                lambda i: f"HOSPXQZ{7301 + i:04d}", lambda i: f"PATIENTXQZ{i + 1:04d}")
    table_path = manifest.parent / "participants.csv"
    # 40.0123 + 0.37 i, plus a fixed 4-decimal jitter: on an exact progression the mean of a group of
    # 10 (a kernel reference point) equals the age of the middle index, a coincidence, not a leak
    jitter = np.round(np.random.default_rng(3).uniform(0, 0.01, len(table)), 4)
    ages = np.round(40.0123 + 0.37 * np.arange(len(table)) + jitter, 4)
    table["age"] = [f"{a:.4f}" for a in ages]
    table["ward"] = ["wardcommon"] * (len(table) - 1) + [RARE_CATEGORY]
    table.to_csv(table_path, index=False)
    data = yaml.safe_load(manifest.read_text())
    data["attributes"].append({"name": "ward", "type": "categorical", "categories": ["wardcommon", RARE_CATEGORY]})
    manifest.write_text(yaml.safe_dump(data))
    forms = {RARE_CATEGORY, *table["subject_id"], *patients.values()}
    for age in ages:  # as written, in full, and as float32 prints it
        forms |= {f"{age:.4f}", repr(float(age)), repr(float(np.float32(age))), str(np.float32(age))}
    return manifest, sorted(forms)


def _scan(root: Path, forms: list[str]) -> dict[str, list[str]]:
    """Every file under root but split.csv, as bytes (a pickle or a header holds strings as UTF-8):
    which of ``forms`` each contains. Text files are read whole; .npy / .safetensors also as a header."""
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name == "split.csv":  # subject and patient ids by design: must not leave (docs/privacy.md)
            continue
        blob = path.read_bytes()
        # a number is a hit when it stands alone: the age 50.01 leaks in "age": 50.01, not in a
        # throughput of 450.01 images/s (a timing that would make the scan flaky)
        found = [f for f in forms if re.search(rb"(?<![0-9.])" + re.escape(f.encode()) + rb"(?![0-9])", blob)]
        if found:
            hits[str(path.relative_to(root))] = found
    return hits


def test_no_artefact_of_a_run_comparison_report_or_export_holds_an_id_a_value_or_a_rare_category(
    distinctive_cohort: tuple[Path, list[str]], tmp_path: Path
) -> None:
    from medcl.export import FORMATS

    manifest, forms = distinctive_cohort
    config = write_config(tmp_path, manifest, method="kernel_du", attributes=["age", "ward", "sex"], epochs=1,
                          batch_size=8)
    run = tmp_path / "run"
    assert cli(["pretrain", "--config", config, "--out", run]) == 0
    assert cli(["probe", run, "--manifest", manifest, "--label", "diagnosis", "--folds", "2"]) == 0
    assert cli(["report", run, "--out", tmp_path / "report" / "report.html"]) == 0
    for fmt in FORMATS:
        assert cli(["export", run, "--format", fmt, "--out", tmp_path / "export" / f"encoder-{fmt}"]) == 0
    assert cli(["compare", "--config", config, "--methods", "kernel_du:age+ward", "--label", "diagnosis",
                "--label", "age", "--seeds", "1", "--folds", "2", "--baseline", "kernel_du:age+ward",
                "--finetune", "diagnosis", "--train-sizes", "50%,100%", "--finetune-epochs", "1",
                "--out", tmp_path / "compare"]) == 0
    # a diagnosis model (its folder, its report and every export) from the same run
    model = tmp_path / "model"
    assert cli(["finetune", run, "--manifest", manifest, "--label", "diagnosis", "--out", model, "--epochs", "1",
                "--bootstrap", "20", "--device", "cpu"]) == 0
    assert cli(["report", model]) == 0
    for fmt in FORMATS:
        assert cli(["export", model, "--format", fmt]) == 0

    # the scan sees what it should: ids are in split.csv, the rare ward in the manifest's table
    split = (run / "split.csv").read_text()
    assert "PATIENTXQZ0001" in split and "HOSPXQZ7301" in split
    assert _scan(manifest.parent, forms)  # the input table holds them all
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert {"run", "report", "export", "compare", "model"} <= written
    assert (tmp_path / "compare" / "report.html").is_file()
    assert list((tmp_path / "compare").rglob("kernel_batch.npy"))
    assert (tmp_path / "compare" / "label_efficiency.csv").is_file()
    assert len(list((tmp_path / "compare" / "finetune").rglob("model.safetensors"))) == 4  # 2 encoders x 2 sizes
    assert {p.name for p in (model / "export").iterdir()} >= {"model.onnx", "model.pt2", "model.safetensors"}
    assert (model / "report.html").is_file() and (model / "metrics.json").is_file()
    assert _scan(tmp_path, forms) == {}

    # the export's cohort summary is the rounded one: no min or max, the rare ward pooled unnamed
    meta = json.loads((tmp_path / "export" / "encoder-bundle" / "configs" / "metadata.json").read_text())
    cohort = meta["medcl"]["training"]["cohort"]
    assert cohort["subjects"] == 40 and cohort["attributes"]["ward"]["counts"] == {
        "wardcommon": 40, "other (each <10)": "<10"}
    assert set(cohort["attributes"]["age"]["quantiles"]) == {"q10", "q50", "q90"}
    # the kernel's ward reference pools the one rare subject away: only the common ward's code
    ward = RunDir(run).kernel_dict()["fitted"]["references"]["ward"]
    assert ward["points"] == [[0.0]] and ward["weights"] == [1.0]
