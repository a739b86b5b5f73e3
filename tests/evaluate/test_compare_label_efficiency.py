"""``medcl compare --finetune LABEL --train-sizes ...``: every arm and scratch fine-tuned at nested
label sizes, paired statistics against a hand computation, cached fine-tunes, bad sizes refused."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _pretrain_helpers import write_compare_config

from medcl.data.cohort import Cohort
from medcl.data.synthetic import generate_cohort
from medcl.errors import MedclInputError
from medcl.evaluate.compare.label_efficiency import parse_train_sizes, size_dirname
from tests._pretrain_helpers import cli

T975 = {1: 12.706204736174698, 2: 4.302652729911275}  # two-sided 95% t quantiles, from tables


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 PNG scans at 16^2 (read-only)."""
    return generate_cohort(tmp_path_factory.mktemp("le_cohort"), dims=2, subjects=60, size=16, seed=0,
                           image_format="png")


def _config(folder: Path, manifest: Path) -> Path:
    return write_compare_config(folder, manifest)


def _spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple], list[tuple]]:
    """Record every fine-tune (run folder, init, seed, size) and every training subset it drew."""
    import medcl.evaluate.finetune as finetune
    import medcl.evaluate.label_subsets as subsets

    calls: list[tuple] = []
    drawn: list[tuple] = []
    real_finetune, real_subset = finetune.finetune_run, subsets.nested_train_subset

    def finetune_run(run_dir, manifest, label, **kw):
        calls.append((Path(run_dir).parent.name, kw["init"], kw["seed"], kw["train_size"]))
        return real_finetune(run_dir, manifest, label, **kw)

    def nested_train_subset(rows, patients, y, kind, size, seed):
        out = real_subset(rows, patients, y, kind, size, seed)
        drawn.append((calls[-1], frozenset(np.asarray(patients)[out].tolist())))
        return out

    monkeypatch.setattr(finetune, "finetune_run", finetune_run)
    monkeypatch.setattr(subsets, "nested_train_subset", nested_train_subset)
    return calls, drawn


@pytest.mark.timeout(300)
def test_label_efficiency_end_to_end_nested_paired_and_cached(cohort: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls, drawn = _spy(monkeypatch)
    out = tmp_path / "cmp"
    args = ["compare", "--config", _config(tmp_path, cohort), "--methods", "du,random_init", "--label", "diagnosis",
            "--seeds", "2", "--folds", "2", "--repeats", "1", "--out", out, "--finetune", "diagnosis",
            "--train-sizes", "50%,100%", "--finetune-epochs", "1"]
    assert cli(args) == 0
    # scratch and du (random_init is scratch: not fine-tuned twice) at each size and seed
    assert sorted(calls) == sorted((arm, init, s, z) for s in (0, 1) for z in ("50%", "100%")
                                   for arm, init in (("du", "scratch"), ("du", "pretrained")))
    # nested sizes per seed; the same patients for scratch and du at one seed and size (paired)
    by: dict[tuple, set] = {}
    inits: dict[tuple, list] = {}
    for (_, init, seed, size), patients in drawn:
        by.setdefault((seed, size), set()).add(patients)
        inits.setdefault((seed, size), []).append(init)
    assert all(sorted(v) == ["pretrained", "scratch"] for v in inits.values()) and len(inits) == 4
    for seed in (0, 1):
        assert len(by[(seed, "50%")]) == 1 and len(by[(seed, "100%")]) == 1
        half, full = next(iter(by[(seed, "50%")])), next(iter(by[(seed, "100%")]))
        assert half < full and len(half) == math.ceil(0.5 * len(full))
    assert by[(0, "50%")] != by[(1, "50%")]  # each seed draws its own subset

    table = pd.read_csv(out / "label_efficiency.csv")
    assert len(table) == 8 and set(table["arm"]) == {"scratch", "du"}
    assert set(table.loc[table["arm"] == "scratch", "init"]) == {"scratch"}
    assert (table["metric"] == "roc_auc").all() and table["value"].between(0, 1).all()
    assert not table["proxy"].any()
    cohort_table = Cohort.from_manifest(cohort)
    split = np.asarray(cohort_table.split())
    train_patients = len(set(np.asarray(cohort_table.patient_ids)[split == "train"]))
    assert set(table.loc[table["train_size"] == "100%", "train_patients"]) == {train_patients}
    # the test set: the manifest's test split, which no run pretrained on
    run_split = pd.read_csv(out / "runs/du/seed0/split.csv", dtype=str)
    test_ids = {str(i) for i, s in zip(cohort_table.subject_ids, split, strict=True) if s == "test"}
    assert not test_ids & set(run_split.loc[run_split["split"] == "train", "subject_id"])
    assert set(table["test_patients"]) == {len(set(np.asarray(cohort_table.patient_ids)[split == "test"]))}

    # the paired differences of summary.json, recomputed by hand from the CSV
    summary = json.loads((out / "summary.json").read_text())["label_efficiency"]
    assert summary["label"] == "diagnosis" and summary["reference"] == "scratch" and summary["baseline"] == "du"
    assert summary["train_sizes"] == ["50%", "100%"]
    entries = {(e["arm"], e["train_size"]): e for e in summary["summary"]}
    assert set(entries) == {(a, z) for a in ("scratch", "du") for z in ("50%", "100%")}
    for size in ("50%", "100%"):
        rows = table[table["train_size"] == size].set_index(["arm", "seed"])["value"]
        diffs = [rows[("du", s)] - rows[("scratch", s)] for s in (0, 1)]
        mean = (diffs[0] + diffs[1]) / 2
        half = T975[1] * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)  # sd of two = |a - b| / sqrt 2
        d = entries[("du", size)]["vs_scratch"]
        assert d["per_seed"] == pytest.approx(diffs) and d["mean"] == pytest.approx(mean)
        assert d["ci_low"] == pytest.approx(mean - half) and d["ci_high"] == pytest.approx(mean + half)
        assert entries[("scratch", size)]["vs_baseline"]["mean"] == pytest.approx(-mean)  # scratch - du
        assert entries[("du", size)]["vs_baseline"] is None and entries[("scratch", size)]["vs_scratch"] is None
        du = [rows[("du", s)] for s in (0, 1)]
        assert entries[("du", size)]["mean"] == pytest.approx(np.mean(du))

    text = (out / "comparison.txt").read_text()
    assert "label efficiency · diagnosis" in text and "Δ vs scratch" in text
    assert "random_init: a randomly initialised encoder fine-tuned is the scratch reference" in text
    page = (out / "report.html").read_text()
    assert "Label efficiency (fine-tuned)" in page and 'alt="label efficiency diagnosis"' in page
    assert "labelled training patients" in page
    model = out / "finetune/diagnosis/scratch/seed1" / size_dirname("50%")
    assert json.loads((model / "model.json").read_text())["diagnosis"]["provenance"]["init"] == "scratch"

    # the same command again: every fine-tune reused, same numbers
    calls.clear()
    weights = {p: p.stat().st_mtime_ns for p in (out / "finetune").rglob("model.safetensors")}
    assert cli(args) == 0
    assert calls == []
    again = pd.read_csv(out / "label_efficiency.csv")
    assert again["value"].tolist() == table["value"].tolist() and again["reused"].all()
    assert {p: p.stat().st_mtime_ns for p in weights} == weights

    # one more size: only it is trained; other fine-tuning settings: every fine-tune is stale
    assert cli([*args[:-4], "--train-sizes", "25%,50%,100%", "--finetune-epochs", "1"]) == 0
    assert sorted({c[3] for c in calls}) == ["25%"] and len(calls) == 4
    calls.clear()
    assert cli([*args[:-4], "--train-sizes", "100%", "--finetune-epochs", "2"]) == 0
    assert len(calls) == 4 and {c[3] for c in calls} == {"100%"}
    latest = pd.read_csv(out / "label_efficiency.csv")
    assert not latest["reused"].any() and set(latest["train_size"]) == {"100%"}


@pytest.mark.parametrize(("extra", "culprit"), [
    (["--finetune", "diagnosis", "--train-sizes", "10%,abc"], "--train-sizes '10%,abc': 'abc'"),
    (["--finetune", "diagnosis", "--train-sizes", "150%"], "--train-sizes '150%'"),
    (["--finetune", "diagnosis", "--train-sizes", "0"], "--train-sizes '0'"),
    (["--finetune", "diagnosis", "--train-sizes", "100%,all"], "same size"),
    (["--finetune", "diagnosis", "--train-sizes", "5000"], "--train-sizes: 5000 patients"),
    (["--train-sizes", "10%"], "need --finetune LABEL"),
    (["--finetune", "nope"], "no label 'nope'"),
    (["--finetune", "diagnosis", "--finetune-mode", "fast"], "--finetune-mode 'fast'"),
])
def test_bad_finetune_options_exit_2_name_the_option_and_write_nothing(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], culprit: str
) -> None:
    out = tmp_path / "out"
    code = cli(["compare", "--config", _config(tmp_path, cohort), "--methods", "du", "--label", "diagnosis",
                "--out", out, *extra])
    err = capsys.readouterr().err
    assert code == 2 and culprit in err and "Traceback" not in err
    assert not out.exists()


def test_train_sizes_parse_into_tags() -> None:
    assert parse_train_sizes("10%, 25%,40,all") == ["10%", "25%", "40", "100%"]
    assert [size_dirname(s) for s in parse_train_sizes(["10%", "40"])] == ["10pct", "40"]
    with pytest.raises(MedclInputError, match=re.escape("--train-sizes: no size given")):
        parse_train_sizes(" , ")


def test_an_arm_pretrained_on_the_label_or_a_proxy_is_marked(cohort: Path, tmp_path: Path) -> None:
    from medcl.evaluate.compare import Arm
    from medcl.evaluate.compare.label_efficiency import _proxy
    from medcl.pretrain.config import load_config

    base = load_config(_config(tmp_path, cohort), ["label=diagnosis"])
    data = Cohort.from_manifest(cohort)
    train = np.flatnonzero(np.asarray(data.split()) == "train")
    assert _proxy(data, Arm("supervised", "supervised"), "diagnosis", train, base)[0]  # the base config's label
    assert _proxy(data, Arm("supcon:diagnosis", "supcon", label="diagnosis"), "diagnosis", train, base)[0]
    assert not _proxy(data, Arm("supervised:age", "supervised", label="age"), "diagnosis", train, base)[0]
    assert _proxy(data, Arm("kernel_du:age", "kernel_du", attributes=("age",)), "age", train, base) == (
        True, "prior attribute 'age' is the probed label")
    assert _proxy(data, Arm("du", "du"), "diagnosis", train, base) == (False, None)
