"""The embedded demo: settings, and a tiny end-to-end run of every arm through the compare engine."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from medcl.demo import ARM_NAMES, DEFAULT_ARMS, DemoSettings, run_demo
from medcl.errors import MedclInputError


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


def test_recipe_is_filled_per_dimension_and_overrides_win(tmp_path: Path) -> None:
    """2D: resnet10 for 60 epochs (far fewer missed runs than 24 epochs of resnet18; side by side, in less demo
    time); 3D keeps resnet18 for 24; augmentation strength 0.5 in 2D, 0.25 in 3D (docs/baselines.md); explicit
    values win; the runs go side by side unless told otherwise."""
    from medcl.demo import base_config

    two, three = DemoSettings(), DemoSettings(dims=3)
    assert (two.arch, two.epochs, three.arch, three.epochs) == ("resnet10", 60, "resnet18", 24)
    assert (two.augmentation_strength, three.augmentation_strength) == (0.5, 0.25)
    assert DemoSettings(dims=3, augmentation_strength=1.0).augmentation_strength == 1.0
    assert base_config(tmp_path / "manifest.yaml", three).augmentation.strength == 0.25
    assert two.jobs == "auto" and DemoSettings(jobs=1).jobs == 1
    mine = DemoSettings.preset("default", epochs=7, dims=2).model_copy(update={"arch": "resnet18"})
    assert (mine.arch, mine.epochs) == ("resnet18", 7)
    assert DemoSettings.preset("quick").epochs == 3
    config = base_config(tmp_path / "manifest.yaml", two)
    assert (config.encoder.arch, config.epochs, config.encoder.channels_last) == ("resnet10", 60, True)


@pytest.mark.timeout(400)
def test_tiny_demo_runs_every_arm_marks_age_and_never_mixes_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medcl.data.vae_prior as vae
    import medcl.pretrain.loop as pretrain_module

    trained: list[str] = []
    real_pretrain = pretrain_module.pretrain
    monkeypatch.setattr(pretrain_module, "pretrain",
                        lambda config, out: trained.append(Path(out).parent.name) or real_pretrain(config, out))
    vae_fits: list[int] = []
    real_fit = vae.fit_vae_prior
    monkeypatch.setattr(vae, "fit_vae_prior",
                        lambda m, f, options, **kw: vae_fits.append(options.epochs) or real_fit(m, f, options, **kw))

    settings = DemoSettings(
        subjects=48, size=16, seeds=1, epochs=1, batch_size=8, widths=[4, 4, 8, 8], vae_epochs=1,
        probe_folds=2, jobs=1,  # in this process: the monkeypatched pretrain sees every run
    )
    lines: list[str] = []
    result = run_demo(tmp_path, settings, on_line=lines.append)

    assert [r["arm"] for r in result.rows if r["label"] == "diagnosis"] == list(DEFAULT_ARMS)
    assert "supcon" in ARM_NAMES and "supcon" not in DEFAULT_ARMS  # SupCon on request only
    assert sorted(trained) == sorted(set(DEFAULT_ARMS) - {"random_init"}) and vae_fits == [1]
    for row in result.rows:
        assert 0.0 <= row["value"] <= 1.0 if row["label"] == "diagnosis" else row["value"] >= 0.0
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * len(DEFAULT_ARMS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    proxy = {(e["arm"], e["label"]) for e in summary["summary"] if e["proxy"]}
    # age is a prior and a probed label: both age arms carry the mark on age, and only there
    assert {("kdu_age", "age"), ("y_aware_age", "age"), ("supervised", "diagnosis")} <= proxy
    assert not {(a, lab) for a, lab in proxy if a in ("du", "simclr", "random_init")}
    table = result.table()
    assert re.search(r"^kdu_age †", table.split("age · mae")[1], re.M)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png") >= 3 and "kdu_age" in page and "Methods comparison" in page
    # the VAE prior became an embedding attribute of the cohort, and kernel DU used it
    kdu_vae = tmp_path / "runs" / "kdu_vae" / "seed0"
    assert "vae" in (kdu_vae / "config.yaml").read_text()
    assert (kdu_vae / "kernel_batch.npy").is_file()
    # one plain progress line per finished run, with elapsed time and ETA
    done = [line for line in lines if re.match(r"\[\d+/\d+\] ", line)]
    assert len(done) == len(DEFAULT_ARMS) and all("ETA" in line and "elapsed" in line for line in done)
    # no subject or patient identifier reaches the report
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    rows = (tmp_path / "cohort" / "participants.csv").read_text().splitlines()[1:]
    ids = {value for line in rows for value in line.split(",")[:2]}
    assert ids and not any(i in text for i in ids)

    # a second call reuses everything (same numbers, no training; a subset of the arms keeps it short)
    trained.clear()
    some = ["random_init", "du", "kdu_vae"]
    again = run_demo(tmp_path, settings.model_copy(update={"methods": some}))
    assert trained == [] and vae_fits == [1]
    assert [r["value"] for r in again.rows] == [r["value"] for r in result.rows if r["arm"] in some]

    # other VAE settings: the latent is refitted and the runs using it retrained; the others are reused
    subset = settings.model_copy(update={"vae_epochs": 2, "methods": ["du", "kdu_vae"]})
    run_demo(tmp_path, subset)
    assert vae_fits == [1, 2] and trained == ["kdu_vae"]
    # other training settings (e.g. --quick's epochs then the default's): stale runs are retrained
    trained.clear()
    run_demo(tmp_path, subset.model_copy(update={"epochs": 2, "methods": ["du"]}))
    assert trained == ["du"] and vae_fits == [1, 2]
    assert "epochs: 2" in (tmp_path / "runs" / "du" / "seed0" / "config.yaml").read_text()
