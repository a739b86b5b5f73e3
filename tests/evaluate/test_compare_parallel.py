"""``medcl compare --jobs``: runs pretrained side by side give the comparison the one-by-one runs give."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import pytest
import torch
from _pretrain_helpers import write_compare_config
from safetensors.torch import load_file

from medcl.data.synthetic import generate_cohort
from medcl.evaluate.compare import Arm, CompareSettings, parallel, run_comparison
from medcl.pretrain.config import load_config
from tests._pretrain_helpers import cli


def test_auto_jobs_is_one_per_core_on_a_cpu_and_one_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    assert parallel.resolve_jobs("auto", runs=20, gpu=False) == 6
    assert parallel.resolve_jobs("auto", runs=20, gpu=True) == 1
    assert parallel.resolve_jobs("auto", runs=4, gpu=False) == 4  # never more workers than runs to train
    assert parallel.resolve_jobs(3, runs=0, gpu=False) == 1
    monkeypatch.setattr(parallel, "available_cores", lambda: 64)
    assert parallel.resolve_jobs("auto", runs=100, gpu=False) == parallel.AUTO_MAX_JOBS
    assert parallel.threads_per_job(parallel.AUTO_MAX_JOBS) == 64 // parallel.AUTO_MAX_JOBS
    assert parallel.threads_per_job(100) == 1


@pytest.mark.timeout(120)
def test_side_by_side_yields_every_item_once_local_ones_first_and_raises_a_workers_error() -> None:
    items = [-3, 1, -2, 5]
    got = list(parallel.run_side_by_side(items, operator.neg, jobs=2, local=lambda x: x > 0))
    assert [item for item, _ in got[:2]] == [1, 5]  # the local items run here, in order, first
    assert sorted(got) == sorted((x, -x) for x in items)
    with pytest.raises(ValueError, match="invalid literal"):
        list(parallel.run_side_by_side(["1", "x"], int, jobs=2))


@pytest.mark.timeout(300)
def test_two_jobs_give_the_one_thread_comparison_row_for_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = generate_cohort(tmp_path / "cohort", dims=2, subjects=40, size=16, seed=0, image_format="png")
    base = load_config(write_compare_config(tmp_path, manifest))
    arms = [Arm("du", "du"), Arm("kernel_du:age", "kernel_du", attributes=("age",)), Arm("random_init", "random_init")]
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)  # each worker trains on one thread, as below

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_comparison(base, arms, tmp_path / "one", CompareSettings(labels=["diagnosis"], seeds=2, folds=2,
                                                                            repeats=1))
    finally:
        torch.set_num_threads(before)
    lines: list[str] = []
    two = run_comparison(base, arms, tmp_path / "two", CompareSettings(labels=["diagnosis"], seeds=2, folds=2,
                                                                        repeats=1, jobs=2), on_line=lines.append)
    assert "training 2 runs side by side, 1 thread(s) each" in lines
    assert sum(line.startswith("[") for line in lines) == 6 and "[6/6]" in lines[-1]
    assert torch.get_num_threads() == before  # the parent's threads are given back

    def table(result):  # the same weights probe the same (AUCs on 24 subjects: fractions, equal to the bit)
        return [(r["arm"], r["seed"], r["label"], round(r["value"], 9), r["fingerprint"]) for r in result.rows]

    assert table(two) == table(one)
    assert [(r["arm"], r["seed"]) for r in two.rows] == [(a.name, s) for s in range(2) for a in arms]  # plan order
    assert json.loads((tmp_path / "two/summary.json").read_text())["fingerprints"] == \
        json.loads((tmp_path / "one/summary.json").read_text())["fingerprints"]
    for weights in [f"runs/{d}/seed{s}/encoder.safetensors" for d in ("du", "kernel_du-age") for s in range(2)]:
        mine, theirs = load_file(tmp_path / "two" / weights), load_file(tmp_path / "one" / weights)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    # a second call reuses every run: nothing goes to the workers
    again = run_comparison(base, arms, tmp_path / "two", CompareSettings(labels=["diagnosis"], seeds=2, folds=2,
                                                                          repeats=1, jobs=2))
    assert {r["reused"] for r in again.rows} == {True}
    assert [r["value"] for r in again.rows] == [r["value"] for r in two.rows]


@pytest.mark.parametrize("jobs", ["0", "two", "-1"])
def test_a_bad_jobs_value_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture, jobs: str) -> None:
    manifest = generate_cohort(tmp_path / "cohort", dims=2, subjects=40, size=16, seed=0, image_format="png")
    config = write_compare_config(tmp_path, manifest)
    out = tmp_path / "out"
    assert cli(["compare", "--config", config, "--methods", "du", "--label", "diagnosis", "--out", out,
                "--jobs", jobs]) == 2
    assert "--jobs" in capsys.readouterr().err and not out.exists()
