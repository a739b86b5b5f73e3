"""The shared cache of preprocessed images: filled once, reused by every stage, safe to share."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medcl.data.cohort import Cohort
from medcl.data.datasets import ImageDataset, MultiViewDataset
from medcl.data.preprocessed import (
    PersistentCache,
    PreprocessedImages,
    cache_folder,
    image_stamp,
    resolve_cache_mode,
    warm_cache,
)
from medcl.data.synthetic import generate_cohort
from medcl.errors import InputProblems


@pytest.fixture
def preprocess_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of every scan preprocessed (read + resampled) in this process from now on."""
    calls: list[str] = []
    original = PersistentCache._pre_transform

    def counted(self, item, *args, **kwargs):
        calls.append(item["image"])
        return original(self, item, *args, **kwargs)

    monkeypatch.setattr(PersistentCache, "_pre_transform", counted)
    return calls


@pytest.fixture
def cohort_dir(tmp_path: Path) -> Path:
    """A fresh 12-subject 3D cohort at 16^3 that a test may modify."""
    return generate_cohort(tmp_path / "cohort", dims=3, subjects=12, size=16, seed=3)


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pt"))


def test_cache_is_filled_once_and_reused_by_pretrain_online_probe_and_probe(cohort_dir, tmp_path,
                                                                              preprocess_calls):
    from _pretrain_helpers import cli, write_config

    cache = tmp_path / "cache"
    assert cli(["cache", "--manifest", cohort_dir, "--cache-dir", cache, "--workers", "0"]) == 0
    cohort = Cohort.from_manifest(cohort_dir)
    assert sorted(preprocess_calls) == sorted(str(p) for p in cohort.image_paths)  # each scan once
    assert len(_entries(cache_folder(cohort.manifest, cache))) == len(cohort)

    config = write_config(tmp_path, cohort_dir, epochs=1, cache="disk", cache_dir=str(cache),
                          probe={"every_n_epochs": 1, "label": "diagnosis"})
    assert cli(["pretrain", "--config", config, "--out", tmp_path / "run"]) == 0
    assert cli(["probe", tmp_path / "run", "--manifest", cohort_dir, "--label", "diagnosis", "--folds", "2"]) == 0
    assert cli(["cache", "--config", config, "--workers", "0"]) == 0  # finds it full
    assert len(preprocess_calls) == len(cohort)  # pretraining, its online probe and the probe read the cache


def test_a_rewritten_scan_is_preprocessed_again(cohort_dir, tmp_path, preprocess_calls):
    import nibabel as nib

    cohort = Cohort.from_manifest(cohort_dir)
    assert warm_cache(cohort, cache_dir=tmp_path, progress=False).built == len(cohort)
    path = cohort.image_paths[4]
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine), path)  # flipped in place
    os.utime(path, ns=(1, 10**18))  # a different stamp even on a coarse-clock file system
    preprocess_calls.clear()

    again = warm_cache(Cohort.from_manifest(cohort_dir), cache_dir=tmp_path, progress=False)
    assert (again.built, again.cached) == (1, len(cohort) - 1)
    assert preprocess_calls == [str(path)]
    fresh = ImageDataset(cohort_dir, [4], cache="none")[0]["image"]
    torch.testing.assert_close(ImageDataset(cohort_dir, [4], cache="disk", cache_dir=tmp_path)[0]["image"], fresh)


_FILL_IN_CHILD = """
import sys
from pathlib import Path
from medcl.data.cohort import Cohort
from medcl.data.preprocessed import warm_cache
report = warm_cache(Cohort.from_manifest(sys.argv[1]), cache_dir=sys.argv[2], progress=False)
Path(sys.argv[3]).write_text(f"{report.built} {report.cached}")
"""


def test_two_processes_filling_at_once_leave_a_valid_cache(tmp_path):
    # fresh interpreters, not fork: a forked child of a process whose thread pools already ran can hang
    manifest = generate_cohort(tmp_path / "c", dims=3, subjects=24, size=16, seed=1)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _FILL_IN_CHILD, str(manifest), str(cache),
                               str(tmp_path / f"r{k}")], stderr=subprocess.PIPE, text=True) for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    reports = [tuple(map(int, (tmp_path / f"r{k}").read_text().split())) for k in range(2)]
    assert all(built + cached == 24 for built, cached in reports)
    folder = cache_folder(Cohort.from_manifest(manifest).manifest, cache)
    assert len(_entries(folder)) == 24
    assert not [p for p in folder.iterdir() if p.suffix != ".pt"]  # no temporary file left behind
    cached = ImageDataset(manifest, cache="disk", cache_dir=cache)
    plain = ImageDataset(manifest, cache="none")
    for i in range(24):
        entry = torch.load(cached._images.entry(i), weights_only=True)
        torch.testing.assert_close(entry["image"], plain[i]["image"])


def test_a_corrupt_entry_is_named_and_rebuilt(cohort_dir, tmp_path, caplog, preprocess_calls):
    warm_cache(Cohort.from_manifest(cohort_dir), cache_dir=tmp_path, progress=False)
    images = ImageDataset(cohort_dir, cache="disk", cache_dir=tmp_path)
    entry = images._images.entry(2)
    entry.write_bytes(entry.read_bytes()[:100])  # truncated, as by a full disk
    preprocess_calls.clear()
    with caplog.at_level(logging.WARNING, logger="medcl.data"):
        image = images[2]["image"]
    assert str(entry) in caplog.text and "rebuilding" in caplog.text
    assert preprocess_calls == [str(Cohort.from_manifest(cohort_dir).image_paths[2])]
    torch.testing.assert_close(image, ImageDataset(cohort_dir, [2], cache="none")[0]["image"])
    torch.testing.assert_close(torch.load(entry, weights_only=True)["image"], image)  # whole again


def test_memory_mode_fills_and_reads_the_shared_disk_cache(cohort_dir, tmp_path, preprocess_calls):
    first = MultiViewDataset(cohort_dir, range(6), cache="memory", cache_dir=tmp_path, cache_workers=0)
    assert len(preprocess_calls) == 6 and len(_entries(first.cache_dir)) == 6
    second = ImageDataset(cohort_dir, range(12), cache="memory", cache_dir=tmp_path, cache_workers=0)
    assert len(preprocess_calls) == 12  # only the 6 new ones
    torch.testing.assert_close(second[3]["image"], first._images[3])


def test_auto_mode_is_disk_for_3d_and_memory_for_small_2d(synthetic_2d_manifest, synthetic_3d_manifest,
                                                         monkeypatch):
    import medcl.data.preprocessed as preprocessed

    m2, m3 = (Cohort.from_manifest(m).manifest for m in (synthetic_2d_manifest, synthetic_3d_manifest))
    assert resolve_cache_mode("auto", m3, 1) == "disk"
    assert resolve_cache_mode("auto", m2, 24) == "memory"
    monkeypatch.setattr(preprocessed, "MEMORY_BUDGET_BYTES", 4 * 32 * 32 * 24 - 1)  # 24 images of 32^2
    assert resolve_cache_mode("auto", m2, 24) == "disk"
    assert resolve_cache_mode("none", m2, 24) == "none"
    with pytest.raises(ValueError, match=r"cache must be one of"):
        resolve_cache_mode("ram", m2, 24)


def test_dicom_series_stamp_follows_every_file(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):
        (series / f"slice{k}.dcm").write_bytes(b"x" * (10 + k))
    before = image_stamp(series)
    os.utime(series / "slice1.dcm", ns=(1, 10**18))
    assert image_stamp(series) != before
    assert image_stamp(series) == image_stamp(series)


def test_unreadable_scans_are_all_named_and_the_rest_cached(cohort_dir, tmp_path, capsys):
    from _pretrain_helpers import cli

    cohort = Cohort.from_manifest(cohort_dir)
    for i in (1, 7):
        cohort.image_paths[i].write_bytes(b"not a nifti")
    with pytest.raises(InputProblems) as err:
        warm_cache(cohort, cache_dir=tmp_path, progress=False)
    assert len(err.value.problems) == 2
    assert all(cohort.image_paths[i].name in str(err.value) for i in (1, 7))
    assert len(_entries(cache_folder(cohort.manifest, tmp_path))) == len(cohort) - 2
    assert cli(["cache", "--manifest", cohort_dir, "--cache-dir", tmp_path, "--workers", "0"]) == 2
    assert cohort.image_paths[7].name in capsys.readouterr().err
    assert cli(["cache"]) == 2


def test_cache_root_is_private(cohort_dir, tmp_path):
    images = PreprocessedImages(Cohort.from_manifest(cohort_dir), np.arange(2), "disk", tmp_path / "root")
    assert (tmp_path / "root").stat().st_mode & 0o077 == 0
    assert images.cache_dir.parent == tmp_path / "root"


def test_parallel_fill_builds_every_entry(tmp_path):
    manifest = generate_cohort(tmp_path / "c", dims=2, subjects=16, size=16, seed=2)
    report = warm_cache(Cohort.from_manifest(manifest), cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert (report.built, report.cached, report.total) == (16, 0, 16)
    assert "preprocessed 16 of 16 scan(s) (0 already cached)" in report.line()
    again = warm_cache(Cohort.from_manifest(manifest), cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert (again.built, again.cached) == (0, 16)


@pytest.mark.parametrize("workers", [0, 2])
def test_filling_the_cache_leaves_the_global_random_state_alone(cohort_dir, tmp_path, workers):
    # a run seeds, then builds its datasets (which may fill a cold cache), then its weights: a cold and
    # a warm cache must give the same weights for the same seed
    torch.manual_seed(0)
    before = torch.get_rng_state()
    report = warm_cache(Cohort.from_manifest(cohort_dir), cache_dir=tmp_path, workers=workers, progress=False)
    assert report.built == 12
    assert torch.equal(torch.get_rng_state(), before)
