"""``medcl compare``: arms, statistics against hand computations, marks, fingerprints, held-out probes."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _pretrain_helpers import write_compare_config

from medcl.data.cohort import Cohort
from medcl.data.synthetic import generate_cohort
from medcl.errors import MedclInputError
from medcl.evaluate import compare
from medcl.evaluate.compare import (
    Arm,
    CompareSettings,
    Comparison,
    cohort_digest,
    corrected_fold_interval,
    parse_arm,
    parse_arms,
    proxy_mark,
    run_fingerprint,
    run_health,
    t_interval,
)
from tests._pretrain_helpers import cli

T975 = {1: 12.706204736174698, 2: 4.302652729911275, 3: 3.182446305284263}  # t quantiles, by hand tables

# ------------------------------------------------------------------------------------- arms


def test_arm_specs_parse_into_method_and_prior() -> None:
    arms = parse_arms("du, kernel_du:age+sex ,y_aware:age,supervised:diagnosis,supcon:diagnosis,simclr,random_init")
    by = {a.name: a for a in arms}
    assert (by["supervised:diagnosis"].method, by["supcon:diagnosis"].method) == ("supervised", "supcon")
    assert by["supcon:diagnosis"].label == "diagnosis" and "SupCon" in by["supcon:diagnosis"].description
    assert "cross-entropy" in by["supervised:diagnosis"].description
    assert by["kernel_du:age+sex"].method == "kernel_du" and by["kernel_du:age+sex"].attributes == ("age", "sex")
    assert by["y_aware:age"].attributes == ("age",)
    assert by["supervised:diagnosis"].label == "diagnosis"
    assert not by["random_init"].trains and by["du"].trains
    assert by["kernel_du:age+sex"].dirname == "kernel_du-age+sex"


@pytest.mark.parametrize(("spec", "culprit"), [
    ("du,kdu", "'kdu'"),
    ("du,du", "given twice"),
    ("simclr:age", "takes no"),
    ("kernel_du:", "no attribute"),
    ("", "no method"),
])
def test_bad_arm_specs_are_input_errors_naming_the_culprit(spec: str, culprit: str) -> None:
    with pytest.raises(MedclInputError, match=re.escape(culprit)):
        parse_arms(spec)


# ------------------------------------------------------------------------------------ statistics


def test_t_interval_matches_a_hand_computation() -> None:
    diffs = [0.05, 0.10, 0.03]
    mean = (0.05 + 0.10 + 0.03) / 3  # 0.06
    sd = math.sqrt(((0.05 - mean) ** 2 + (0.10 - mean) ** 2 + (0.03 - mean) ** 2) / 2)
    half = T975[2] * sd / math.sqrt(3)
    m, lo, hi, df = t_interval(diffs)
    assert m == pytest.approx(0.06) and df == 2
    assert lo == pytest.approx(mean - half) and hi == pytest.approx(mean + half)
    assert hi - lo == pytest.approx(2 * 4.302652729911275 * 0.036055512754639894 / math.sqrt(3))
    one = t_interval([0.2])
    assert one[0] == 0.2 and math.isnan(one[1])


def test_corrected_fold_interval_matches_nadeau_bengio_by_hand() -> None:
    d = [0.02, -0.01, 0.05, 0.02]  # 2 seeds x 2 folds
    mean = 0.02
    s2 = ((0.0) ** 2 + (-0.03) ** 2 + (0.03) ** 2 + 0.0**2) / 3  # 0.0006
    half = T975[3] * math.sqrt((1 / 4 + 1.0) * s2)  # 2 folds: n_test / n_train = 1
    m, lo, hi, df = corrected_fold_interval(d, 1.0)
    assert (m, df) == (pytest.approx(mean), 3)
    assert (lo, hi) == (pytest.approx(mean - half), pytest.approx(mean + half))
    # far wider than the naive t over folds, which ignores that folds share training data
    naive = t_interval(d)
    assert hi - lo > 2 * (naive[2] - naive[1])


def _comparison(rows: list[tuple[str, int, str, float]], *, collapsed: set[tuple[str, int]] = frozenset(),
                proxy: dict | None = None) -> Comparison:
    arms = [Arm("du", "du"), Arm("kdu_age", "kernel_du", attributes=("age",))]
    result = Comparison(out=Path("."), arms=arms, settings=CompareSettings(labels=["dx", "age"], seeds=2),
                        labels={"dx": "binary", "age": "continuous"}, held_out=40)
    for arm, seed, label, value in rows:
        result.rows.append({"arm": arm, "seed": seed, "label": label, "value": value,
                            "collapsed": (arm, seed) in collapsed,
                            "collapse_reason": "loss stuck at log(2B-1)" if (arm, seed) in collapsed else None})
    for key, reason in (proxy or {}).items():
        result.proxy[key] = {"marked": True, "reason": reason, "measures": {}}
    return result


def test_summary_pairs_each_seed_with_the_baseline_and_the_table_shows_it() -> None:
    result = _comparison([
        ("du", 0, "dx", 0.60), ("du", 1, "dx", 0.70), ("kdu_age", 0, "dx", 0.65), ("kdu_age", 1, "dx", 0.80),
        ("du", 0, "age", 10.0), ("du", 1, "age", 12.0), ("kdu_age", 0, "age", 9.0), ("kdu_age", 1, "age", 12.5),
    ])
    by = {(e["arm"], e["label"]): e for e in result.summary()}
    kdu = by[("kdu_age", "dx")]
    assert kdu["mean"] == pytest.approx(0.725) and kdu["sd"] == pytest.approx(np.std([0.65, 0.80], ddof=1))
    d = kdu["diff"]  # paired: +0.05 and +0.10
    assert d["mean"] == pytest.approx(0.075) and d["wins"] == 2
    half = T975[1] * np.std([0.05, 0.10], ddof=1) / math.sqrt(2)
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(0.075 - half), pytest.approx(0.075 + half))
    age = by[("kdu_age", "age")]["diff"]  # MAE: lower is better; -1.0 and +0.5 -> one win
    assert age["mean"] == pytest.approx(-0.25) and age["wins"] == 1
    assert by[("du", "dx")]["diff"] is None and by[("du", "dx")]["is_baseline"]
    table = result.table()
    assert "+0.075" in table and "(baseline)" in table and "mae (lower is better)" in table
    assert "†" not in table and "!" not in table


def test_proxy_and_collapse_marks_reach_summary_and_table() -> None:
    rows = [(a, s, lab, 0.5 + 0.1 * s) for a in ("du", "kdu_age") for s in (0, 1) for lab in ("dx", "age")]
    result = _comparison(rows, collapsed={("du", 1)},
                         proxy={("kdu_age", "age"): "prior attribute 'age' is the probed label"})
    by = {(e["arm"], e["label"]): e for e in result.summary()}
    assert by[("kdu_age", "age")]["proxy"] and not by[("kdu_age", "dx")]["proxy"]
    assert by[("du", "dx")]["collapsed"] and by[("du", "dx")]["collapsed_seeds"] == [1]
    assert by[("du", "dx")]["collapse_reasons"] == ["loss stuck at log(2B-1)"]
    assert not by[("kdu_age", "dx")]["collapsed"]
    table = result.table()
    dx_block, age_block = table.split("age · mae")
    assert re.search(r"^kdu_age †\s", age_block, re.M) and re.search(r"^kdu_age\s+0", dx_block, re.M)
    assert re.search(r"^du !\s", table, re.M) and "! training collapsed" in table and "† the arm's prior" in table


def test_run_health_reads_the_summary_defensively(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert run_health(run) == (False, None)  # no summary.json
    (run / "summary.json").write_text(json.dumps({"method": "du", "final_loss": 1.0}))
    assert run_health(run) == (False, None)  # a summary written before health checks existed
    (run / "summary.json").write_text(json.dumps({"health": {
        "collapsed": True, "reason": "spread 0.001 < 0.05", "spread": 0.001, "effective_rank": 1.0,
        "warnings": []}}))
    assert run_health(run) == (True, "spread 0.001 < 0.05")
    (run / "summary.json").write_text(json.dumps({"health": {"collapsed": False, "reason": None}}))
    assert run_health(run) == (False, None)
    (run / "summary.json").write_text("{not json")
    assert run_health(run) == (False, None)


# ------------------------------------------------------------------------------------- proxies


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 chest-X-ray-like PNGs at 16^2 (read-only: copy before changing)."""
    return generate_cohort(tmp_path_factory.mktemp("cmp_cohort"), dims=2, subjects=48, size=16, seed=0,
                           image_format="png")


def _with_attributes(src: Path, dst: Path, columns: dict[str, np.ndarray]) -> Path:
    shutil.copytree(src.parent, dst)
    table = pd.read_csv(dst / "participants.csv")
    for name, values in columns.items():
        table[name] = values
    table.to_csv(dst / "participants.csv", index=False)
    manifest = yaml.safe_load((dst / "manifest.yaml").read_text())
    manifest["attributes"] += [{"name": n, "type": "continuous"} for n in columns]
    (dst / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return dst / "manifest.yaml"


def test_proxy_mark_the_label_itself_a_close_proxy_and_an_unrelated_attribute(tiny_cohort: Path,
                                                                             tmp_path: Path) -> None:
    table = pd.read_csv(tiny_cohort.parent / "participants.csv")
    dx = (table["diagnosis"] == "disease").to_numpy(float)
    rng = np.random.default_rng(0)
    manifest = _with_attributes(tiny_cohort, tmp_path / "c", {
        "dx_score": dx + 0.1 * rng.normal(size=len(dx)),  # nearly the diagnosis
        "noise": rng.normal(size=len(dx)),  # unrelated
    })
    cohort = Cohort.from_manifest(manifest)
    train = cohort.indices("train")
    marked, reason, measures = proxy_mark(cohort, parse_arm("kernel_du:dx_score"), "diagnosis", train)
    r = np.corrcoef(cohort.attribute_matrix(["dx_score"])[0][train, 0], dx[train])[0, 1]  # independent r
    assert marked and "|r|(dx_score, diagnosis)" in reason and "training split" in reason
    assert measures["dx_score"]["r"] == pytest.approx(r, abs=1e-6) and abs(r) > compare.PROXY_CORRELATION
    marked, reason, measures = proxy_mark(cohort, parse_arm("kernel_du:noise"), "diagnosis", train)
    assert not marked and reason is None
    assert abs(measures["noise"]["r"]) < compare.PROXY_CORRELATION and measures["noise"]["cka"] < compare.PROXY_CKA
    # a combination is marked when any of its attributes is
    assert proxy_mark(cohort, parse_arm("kernel_du:noise+dx_score"), "diagnosis", train)[0]
    assert proxy_mark(cohort, parse_arm("y_aware:age"), "age", train)[1] == (
        "prior attribute 'age' is the probed label")
    assert proxy_mark(cohort, parse_arm("supervised:diagnosis"), "diagnosis", train)[0]
    assert not proxy_mark(cohort, parse_arm("supervised:diagnosis"), "age", train)[0]
    assert proxy_mark(cohort, parse_arm("supcon:diagnosis"), "diagnosis", train)[0]
    assert not proxy_mark(cohort, parse_arm("du"), "age", train)[0]


def test_diverged_seeds_are_marked_and_left_out_of_means_and_pairs() -> None:
    rows = [("du", 0, "dx", 0.60), ("du", 1, "dx", 0.70), ("du", 2, "dx", 0.50),
            ("kdu_age", 0, "dx", 0.65), ("kdu_age", 2, "dx", 0.80)]  # kdu_age seed 1 diverged: no row
    result = _comparison(rows)
    result.arms.append(Arm("boom", "du"))
    result.diverged = {"kdu_age": {1: "loss is nan at step 3"}, "boom": {0: "nan", 1: "nan", 2: "nan"}}
    by = {e["arm"]: e for e in result.summary() if e["label"] == "dx"}
    kdu = by["kdu_age"]
    assert kdu["seeds"] == 2 and kdu["mean"] == pytest.approx(0.725) and kdu["diverged_seeds"] == [1]
    assert kdu["diff"]["per_seed"] == [pytest.approx(0.05), pytest.approx(0.30)]  # seeds 0 and 2 only
    assert by["boom"]["mean"] is None and by["boom"]["diverged_seeds"] == [0, 1, 2]
    assert by["du"]["diverged_seeds"] == []
    table = result.table()
    assert re.search(r"^kdu_age ✗\s+0\.725", table, re.M)
    assert re.search(r"^boom ✗\s+diverged on every seed", table, re.M)
    assert "kdu_age seed 1; boom seed 0, 1, 2" in table


# ---------------------------------------------------------------------------------- fingerprints


def test_fingerprint_changes_with_config_cohort_and_version(tiny_cohort: Path, tmp_path: Path) -> None:
    sha = cohort_digest(Cohort.from_manifest(tiny_cohort))
    config = {"method": "du", "epochs": 3, "progress_bar": True}
    fp = run_fingerprint(config, sha, "0.1.0")["fingerprint"]
    assert run_fingerprint({**config, "progress_bar": False}, sha, "0.1.0")["fingerprint"] == fp  # display only
    assert run_fingerprint({**config, "epochs": 4}, sha, "0.1.0")["fingerprint"] != fp
    assert run_fingerprint(config, sha, "0.2.0")["fingerprint"] != fp
    assert run_fingerprint(config, "0" * 64, "0.1.0")["fingerprint"] != fp
    # the cohort's content: one changed age in the table changes the digest
    copy = tmp_path / "copy"
    shutil.copytree(tiny_cohort.parent, copy)
    assert cohort_digest(Cohort.from_manifest(copy / "manifest.yaml")) == sha  # same content, other place
    table = pd.read_csv(copy / "participants.csv")
    table.loc[0, "age"] += 1
    table.to_csv(copy / "participants.csv", index=False)
    assert cohort_digest(Cohort.from_manifest(copy / "manifest.yaml")) != sha


def test_fingerprints_ignore_options_the_method_never_reads(tiny_cohort: Path, tmp_path: Path) -> None:
    from medcl.evaluate.compare.fingerprints import learned_settings
    from medcl.pretrain.config import parse_config
    from medcl.pretrain.loop import prepare

    def fingerprint(method: str, manifest: Path = tiny_cohort, **extra) -> str:
        raw = {"manifest": str(manifest), "method": method, "attributes": [] if method == "du" else ["age"],
               "encoder": {"arch": "resnet18", "widths": [4, 4, 8, 8]}, "epochs": 1, "batch_size": 8, **extra}
        return run_fingerprint(learned_settings(prepare(parse_config(raw)).config), "0" * 64, "0.1.0")["fingerprint"]

    prior = {"prior": {"instance_weight": 0.3, "bandwidth_scale": 0.5}}
    assert fingerprint("du") == fingerprint("du", **prior) == fingerprint("du", loss={"sigma": 2.0, "lam": 0.1})
    assert fingerprint("du") != fingerprint("du", loss={"t": 3.0})  # DU reads t
    assert fingerprint("kernel_du") != fingerprint("kernel_du", **prior)
    assert fingerprint("kernel_du") != fingerprint("kernel_du", loss={"lam": 0.1})
    assert fingerprint("y_aware", loss={"sigma": 2.0}) != fingerprint("y_aware", loss={"sigma": 3.0})
    assert fingerprint("simclr") == fingerprint("simclr", loss={"temperature": 0.1})  # its default, resolved
    copy = tmp_path / "moved"
    shutil.copytree(tiny_cohort.parent, copy)
    assert fingerprint("du", manifest=copy / "manifest.yaml") == fingerprint("du")  # content is hashed apart


# ------------------------------------------------------------------------------------- end to end


def _tiny_config(folder: Path, manifest: Path) -> Path:
    return write_compare_config(folder, manifest)


@pytest.mark.timeout(240)
def test_compare_end_to_end_held_out_probes_reuse_and_stale_runs(tiny_cohort: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import medcl.evaluate.features as features
    import medcl.pretrain.loop as pretrain_module

    trained: list[str] = []
    real_pretrain = pretrain_module.pretrain
    monkeypatch.setattr(pretrain_module, "pretrain",
                        lambda config, out: trained.append(str(out)) or real_pretrain(config, out))
    encoded: list[np.ndarray] = []
    real_encode = features.encode_dataset
    monkeypatch.setattr(features, "encode_dataset",
                        lambda enc, ds, **kw: encoded.append(np.asarray(ds.indices)) or real_encode(enc, ds, **kw))

    config = _tiny_config(tmp_path, tiny_cohort)
    out = tmp_path / "cmp"
    args = ["compare", "--config", config, "--methods", "du,kernel_du:age", "--label", "diagnosis",
            "--label", "age", "--seeds", "2", "--folds", "2", "--out", out]
    assert cli(args) == 0
    assert len(trained) == 4

    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 * 2 * 2 and {r["arm"] for r in rows} == {"du", "kernel_du:age"}
    assert {(r["temperature"], r["temperature_key"], r["augmentation_strength"]) for r in rows} == {
        ("2.0", "loss.t", "1.0")}  # each run's resolved loss temperature and augmentation strength
    # the probe never saw a pretraining subject: encoded rows are disjoint from each run's train split
    cohort = Cohort.from_manifest(tiny_cohort)
    ids = np.asarray(cohort.subject_ids)
    for run in (out / "runs").glob("*/seed*"):
        split = pd.read_csv(run / "split.csv", dtype=str)
        train_ids = set(split.loc[split["split"] == "train", "subject_id"])
        assert train_ids and len(split) == len(ids)
        for indices in encoded:
            assert not train_ids & set(ids[indices])
            assert len(indices) == int((split["split"] != "train").sum())
        assert {r["subjects"] for r in rows if r["label"] == "age"} == {str(len(encoded[0]))}
    summary = json.loads((out / "summary.json").read_text())
    marks = {(e["arm"], e["label"]): e["proxy"] for e in summary["summary"]}
    assert marks == {("du", "diagnosis"): False, ("du", "age"): False,
                     ("kernel_du:age", "diagnosis"): False, ("kernel_du:age", "age"): True}
    assert "kernel_du:age †" in (out / "comparison.txt").read_text()
    page = (out / "report.html").read_text()
    assert "Methods comparison" in page and "kernel_du:age" in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    table = pd.read_csv(tiny_cohort.parent / "participants.csv", dtype=str)
    assert not any(i in text for i in [*table["subject_id"], *table["patient_id"]])

    weights = sorted((out / "runs").glob("*/seed*/encoder.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in weights}
    first = summary["fingerprints"]

    # nothing changed: every run is reused, same numbers
    trained.clear()
    assert cli(args) == 0
    assert trained == [] and {p: p.stat().st_mtime_ns for p in weights} == before
    again = list(csv.DictReader(open(out / "results.csv")))
    assert [r["value"] for r in again] == [r["value"] for r in rows] and {r["reused"] for r in again} == {"True"}

    # a changed setting: the baseline's runs are stale and retrained, never mixed in
    trained.clear()
    assert cli(["compare", "--config", config, "--methods", "du", "--label", "age", "--seeds", "2",
                "--folds", "2", "--out", out, "--set", "epochs=2"]) == 0
    assert sorted(Path(p).parent.name + "/" + Path(p).name for p in trained) == ["du/seed0", "du/seed1"]
    for p in weights:
        changed = p.stat().st_mtime_ns != before[p]
        assert changed == (p.parent.parent.name == "du")
    assert yaml.safe_load((out / "runs/du/seed0/config.yaml").read_text())["epochs"] == 2
    latest = json.loads((out / "summary.json").read_text())["fingerprints"]
    assert latest["du"]["0"] != first["du"]["0"]
    assert json.loads((out / "runs/du/seed0/fingerprint.json").read_text())["fingerprint"] == latest["du"]["0"]


@pytest.mark.timeout(120)
def test_a_diverging_arm_is_marked_and_the_comparison_goes_on(tiny_cohort: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import medcl.pretrain.loop as pretrain_module
    from medcl.evaluate.compare import run_comparison
    from medcl.pretrain.config import load_config

    base = load_config(_tiny_config(tmp_path, tiny_cohort))
    arms = [Arm("du", "du"), Arm("boom", "du", overrides=("optimizer.lr=1e30",))]  # a real NaN loss
    settings = CompareSettings(labels=["diagnosis"], seeds=1, folds=2, repeats=1)
    result = run_comparison(base, arms, tmp_path / "out", settings)
    assert result.diverged["boom"][0].startswith("the du loss is nan")
    assert [r["arm"] for r in result.rows] == ["du"]  # du probed; boom has no result rows
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert "nan" in summary["diverged"]["boom"]["0"]
    assert json.loads((tmp_path / "out/runs/boom/seed0/diverged.json").read_text())["fingerprint"]
    assert "boom ✗" in (tmp_path / "out/comparison.txt").read_text()
    # rerun: the diverged run is reused (training is deterministic), not retrained
    trained: list[str] = []
    real = pretrain_module.pretrain
    monkeypatch.setattr(pretrain_module, "pretrain", lambda config, out: trained.append(str(out)) or real(config, out))
    again = run_comparison(base, arms, tmp_path / "out", settings)
    assert trained == [] and again.diverged == result.diverged


@pytest.mark.parametrize(("extra", "culprit"), [
    (["--methods", "du,nope", "--label", "diagnosis"], "unknown method 'nope'"),
    (["--methods", "du,kernel_du:weight", "--label", "diagnosis"], "'weight'"),
    (["--methods", "du,y_aware:site", "--label", "diagnosis"], "continuous"),
    (["--methods", "du,supcon:age", "--label", "diagnosis"], "continuous"),
    (["--methods", "du,simclr", "--label", "nope"], "no label 'nope'"),
    (["--methods", "simclr,random_init", "--label", "age"], "--baseline 'du'"),
    (["--methods", "du", "--label", "age", "--seeds", "0"], "--seeds"),
    (["--methods", "du", "--label", "age", "--folds", "20"], "too few"),
])
def test_cli_errors_exit_2_name_the_culprit_and_write_nothing(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], culprit: str
) -> None:
    config = _tiny_config(tmp_path, tiny_cohort)
    out = tmp_path / "out"
    assert cli(["compare", "--config", config, "--out", out, *extra]) == 2
    assert culprit in capsys.readouterr().err
    assert not out.exists()


def test_arm_config_changes_only_method_prior_seed_and_its_own_overrides() -> None:
    from medcl.evaluate.compare import arm_config
    from medcl.pretrain.config import parse_config

    base = parse_config({"manifest": "m.yaml", "method": "kernel_du", "attributes": ["score1"], "epochs": 7,
                         "label": "diagnosis", "loss": {"temperature": 0.2}})
    y_aware = arm_config(base, Arm("ya", "y_aware", attributes=("age",), overrides=("loss.sigma=5",)), 2)
    assert (y_aware.method, y_aware.attributes, y_aware.seed, y_aware.loss.sigma) == ("y_aware", ["age"], 2, 5.0)
    assert y_aware.label is None and y_aware.epochs == 7 and y_aware.loss.temperature == 0.2
    du = arm_config(base, parse_arm("du"), 0)
    assert du.attributes == [] and du.loss.sigma is None and not du.progress_bar
    assert arm_config(base, parse_arm("supervised"), 0).label == "diagnosis"  # the base's label
    supcon = arm_config(base, parse_arm("supcon:age"), 0)
    assert (supcon.method, supcon.label, supcon.attributes) == ("supcon", "age", [])
    kdu = arm_config(base, parse_arm("kernel_du"), 1)
    assert kdu.attributes == ["score1"]
    assert {k: v for k, v in kdu.model_dump().items() if k not in ("seed", "progress_bar")} == {
        k: v for k, v in base.model_dump().items() if k not in ("seed", "progress_bar", "label")} | {"label": None}


def test_eta_uses_each_arms_own_time_then_arms_that_train_alike() -> None:
    from medcl.evaluate.compare.engine import _expected

    arms = parse_arms("du,kernel_du:age,random_init")
    du, kdu, rand = arms
    spent = {"du": [10.0, 20.0]}
    assert _expected(du, spent, arms) == 15.0 and _expected(kdu, spent, arms) == 15.0
    assert _expected(rand, spent, arms) == 15.0  # nothing alike yet: every arm's mean
    spent["random_init"] = [1.0]
    assert _expected(rand, spent, arms) == 1.0 and _expected(kdu, spent, arms) == 15.0
    assert _expected(du, {}, arms) == 0.0


def test_manifest_option_fills_a_base_config_without_one(tiny_cohort: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    config = _tiny_config(tmp_path, tiny_cohort)
    data = yaml.safe_load(config.read_text())
    del data["manifest"]
    config.write_text(yaml.safe_dump(data))
    args = ["compare", "--config", config, "--out", tmp_path / "out", "--methods", "du,kernel_du:weight",
            "--label", "diagnosis"]
    assert cli(args) == 2
    assert "manifest: Field required" in capsys.readouterr().err  # without --manifest
    assert cli([*args, "--manifest", tiny_cohort]) == 2
    err = capsys.readouterr().err
    assert "'weight'" in err and "Field required" not in err  # validated with the given manifest
    assert not (tmp_path / "out").exists()


def test_repeats_average_fresh_fold_draws_of_the_same_features(tiny_cohort: Path, tmp_path: Path) -> None:
    from medcl.evaluate.probe import probe_features
    from medcl.pretrain.config import load_config

    base = load_config(_tiny_config(tmp_path, tiny_cohort))
    out = tmp_path / "cmp"
    settings = CompareSettings(labels=["age"], seeds=1, folds=2, repeats=3, baseline="random_init")
    result = compare.run_comparison(base, compare.parse_arms("random_init"), out, settings)

    # independent reference: the run's own held-out features, probed with the three fold draws
    saved = np.load(out / "runs/random_init/seed0/embeddings.npz")
    cohort = Cohort.from_manifest(tiny_cohort)
    held = np.flatnonzero(np.asarray(cohort.split()) != "train")
    groups = np.asarray(cohort.patient_ids, dtype=object)[held]
    draws = [probe_features(saved["features"], saved["age"], groups, "continuous", n_folds=2, seed=s)
             for s in (0, 1000, 2000)]
    maes = [d.metric("mae").mean for d in draws]
    assert len({round(m, 9) for m in maes}) > 1  # the draws differ, so averaging them is not a no-op
    row = result.rows[0]
    assert row["value"] == pytest.approx(np.mean(maes))
    assert result.folds[("random_init", 0, "age")] == pytest.approx(
        [v for d in draws for v in d.metric("mae").per_fold])
    assert json.loads((out / "summary.json").read_text())["settings"]["repeats"] == 3
    assert "x 3 draws" in (out / "comparison.txt").read_text()


def test_both_label_arms_are_listed_and_known_to_the_config(tiny_cohort: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from medcl.evaluate.compare import CompareSettings, plan
    from medcl.pretrain import config

    assert cli(["compare", "--help"]) == 0
    listing = " ".join(capsys.readouterr().out.split())
    assert "supervised:LABEL" in listing and "supcon:LABEL" in listing
    base = config.parse_config({"manifest": str(tiny_cohort), "method": "du", "batch_size": 4})
    planned, _ = plan(base, parse_arms("du,supervised:diagnosis,supcon:diagnosis"),
                      CompareSettings(labels=["diagnosis"], seeds=1))
    assert sorted({p.arm.method for p in planned}) == ["du", "supcon", "supervised"]
    with pytest.raises(MedclInputError, match="needs a label: write supcon:LABEL"):
        plan(base, parse_arms("du,supcon"), CompareSettings(labels=["diagnosis"]))


def test_the_trust_line_reports_the_seed_spread_of_the_arms_per_label() -> None:
    from medcl.evaluate.compare.results import trust_line

    def entry(arm: str, label: str, metric: str, values: list[float]) -> dict:
        return {"arm": arm, "label": label, "metric": metric, "seeds": len(values),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}

    entries = [entry("du", "diagnosis", "roc_auc", [0.6, 0.9, 0.75]),   # sd 0.150
               entry("kdu", "diagnosis", "roc_auc", [0.80, 0.82, 0.84]),  # sd 0.020
               entry("du", "age", "mae", [10.0, 11.0])]                  # sd 0.707
    line = trust_line(entries)
    assert "diagnosis roc_auc sd 0.020–0.150" in line
    assert "age mae sd 0.707–0.707" in line
    assert trust_line([entry("du", "diagnosis", "roc_auc", [0.7])]) == ""  # one seed: no spread to report


def test_each_arm_states_its_resolved_temperature_and_augmentation_strength(tiny_cohort: Path) -> None:
    from medcl.evaluate.compare.arms import run_settings
    from medcl.pretrain.config import parse_config
    from medcl.pretrain.loop import prepare

    def settings(method: str, **extra) -> dict:
        raw = {"manifest": str(tiny_cohort), "method": method, "attributes": [], "batch_size": 8,
               "augmentation": {"strength": 0.5}, **extra}
        return run_settings(prepare(parse_config(raw)).config)

    assert settings("simclr") == {"temperature": 0.1, "temperature_key": "loss.temperature",
                                  "augmentation_strength": 0.5}  # the method's default, resolved
    assert settings("supcon", label="diagnosis")["temperature"] == 0.5
    assert settings("dcl", loss={"temperature": 0.2})["temperature"] == 0.2
    assert settings("du", loss={"t": 3.0})["temperature_key"] == "loss.t"
    assert settings("du", loss={"t": 3.0})["temperature"] == 3.0
    ce = settings("supervised", label="diagnosis", augmentation={"strength": 1.0})
    assert ce == {"temperature": None, "temperature_key": None, "augmentation_strength": 1.0}
    assert set(run_settings(None).values()) == {None}  # random init trains nothing

    result = _comparison([(a, s, "dx", 0.6 + 0.1 * s + 0.05 * (a == "kdu_age")) for a in ("du", "kdu_age")
                          for s in (0, 1)])
    for row in result.rows:
        row.update({"temperature": 2.0, "temperature_key": "loss.t", "augmentation_strength": 0.5}
                   if row["arm"] == "du" else
                   {"temperature": 0.1, "temperature_key": "loss.temperature", "augmentation_strength": 1.0})
    by = {e["arm"]: e for e in result.summary()}
    assert (by["du"]["temperature"], by["du"]["augmentation_strength"]) == (2.0, 0.5)
    assert by["kdu_age"]["temperature_key"] == "loss.temperature"
    table = result.table()
    assert re.search(r"^du .*\(baseline\)\s+t 2\s+0\.5$", table, re.M)
    assert re.search(r"^kdu_age .*2/2\s+τ 0\.1\s+1$", table, re.M)
    assert "temp.: the loss's resolved temperature" in table
    from medcl.report.comparison import comparison_html

    page = comparison_html(result)  # the report's table states them too, in its own columns
    assert "<th>temp.</th><th>aug.</th>" in page and "temp.: the loss&#x27;s resolved temperature" in page
    assert re.search(r"<td>du [^<]*</td>.*?<td>t 2</td><td class=\"num\">0\.5</td>", page)
    assert re.search(r"<td>kdu_age [^<]*</td>.*?<td>τ 0\.1</td><td class=\"num\">1</td>", page)
