"""Datasets and loaders: the cohort -> batch path, per-view seeding, caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcl.data.cohort import Cohort
from medcl.data.datasets import ImageDataset, MultiViewDataset, collate_multiview, make_loader
from medcl.data.synthetic import generate_cohort
from medcl.errors import MedclInputError


@pytest.fixture(scope="module")
def cohort_3d(synthetic_3d_manifest) -> Cohort:
    return Cohort.from_manifest(synthetic_3d_manifest)


def _by_index(batches) -> dict[int, torch.Tensor]:
    return {int(i): b["views"][k] for b in batches for k, i in enumerate(b["index"])}


FIXTURES = ["synthetic_3d_manifest", "synthetic_2d_manifest", "synthetic_dicom_manifest"]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_cohort_to_batch(request, fixture):
    cohort = Cohort.from_manifest(request.getfixturevalue(fixture))
    size = tuple(cohort.manifest.preprocessing.size)
    indices = np.flatnonzero(cohort.split() == "train")
    ds = MultiViewDataset(cohort, indices, views=3, cache="none")
    batch = next(iter(make_loader(ds, 4, shuffle=False)))
    assert batch["views"].shape == (4, 3, 1, *size) and batch["views"].dtype == torch.float32
    assert batch["attributes"].shape == (4, 6) and batch["attributes"].dtype == torch.float32
    assert batch["missing"].shape == (4, 6) and batch["missing"].dtype == torch.bool
    assert batch["labels"].shape == (4, 2) and batch["index"].tolist() == indices[:4].tolist()
    values, missing, _ = cohort.attribute_matrix()
    rows = indices[:4]
    np.testing.assert_array_equal(batch["missing"].numpy(), missing[rows])
    np.testing.assert_allclose(batch["attributes"].numpy(), np.nan_to_num(values[rows]))
    np.testing.assert_allclose(batch["labels"][:, 0].numpy(), cohort.label("diagnosis")[rows])
    np.testing.assert_allclose(batch["labels"][:, 1].numpy(), cohort.label("age")[rows], rtol=1e-6)


def test_missing_attributes_and_labels_come_through(tmp_path):
    path = generate_cohort(tmp_path / "c", dims=2, subjects=20, size=16, missing_fraction=0.4)
    ds = MultiViewDataset(path, cache="none", attribute_names=["age", "score1"], label_names=["diagnosis"])
    items = [ds[i] for i in range(len(ds))]
    missing = torch.stack([it["missing"] for it in items])
    assert missing[:, 0].sum() == 0 and 0 < missing[:, 1].sum() < 20
    attributes = torch.stack([it["attributes"] for it in items])
    assert torch.all(attributes[missing] == 0) and torch.isfinite(attributes).all()
    assert items[0]["labels"].shape == (1,)


def test_views_of_one_subject_differ(cohort_3d):
    ds = MultiViewDataset(cohort_3d, [0, 1], views=4, cache="none")
    views = ds[0]["views"]
    for a in range(4):
        for b in range(a + 1, 4):
            assert (views[a] - views[b]).abs().mean() > 0.05


def test_views_depend_on_seed_epoch_index_not_on_workers(cohort_3d):
    ds = MultiViewDataset(cohort_3d, range(8), views=2, cache="memory", seed=5)
    single = _by_index(make_loader(ds, 3, shuffle=True, seed=0))
    workers = _by_index(make_loader(ds, 3, shuffle=True, seed=1, num_workers=2))
    assert single.keys() == workers.keys() == set(range(8))
    for i in single:
        torch.testing.assert_close(single[i], workers[i], rtol=0, atol=0)
    subset = MultiViewDataset(cohort_3d, [6, 3], views=2, cache="none", seed=5)  # other subset, no cache
    torch.testing.assert_close(subset[1]["views"], single[3], rtol=0, atol=1e-6)

    ds.set_epoch(1)
    later = _by_index(make_loader(ds, 4, shuffle=False))
    assert all(not torch.equal(single[i], later[i]) for i in single)
    other_seed = MultiViewDataset(cohort_3d, [0], cache="memory", seed=6)
    assert not torch.equal(other_seed[0]["views"], single[0])


def test_cache_modes_serve_the_same_images(cohort_3d, tmp_path):
    images = {
        mode: ImageDataset(cohort_3d, [2, 5], cache=mode, cache_dir=tmp_path)[1]["image"]
        for mode in ("memory", "disk", "none")
    }
    torch.testing.assert_close(images["memory"], images["none"])
    torch.testing.assert_close(images["disk"], images["none"])
    assert ImageDataset(cohort_3d, [2, 5], cache="none")[1]["index"] == 5


def test_disk_cache_key_follows_preprocessing(synthetic_3d_manifest, tmp_path):
    from medcl.data.manifest import load_manifest, parse_manifest

    manifest = load_manifest(synthetic_3d_manifest)
    first = ImageDataset(Cohort.from_manifest(manifest), [0, 1], cache="disk", cache_dir=tmp_path)
    for i in range(2):
        first[i]
    files = sorted(first.cache_dir.iterdir())
    assert len(files) == 2
    again = ImageDataset(Cohort.from_manifest(manifest), [0, 1], cache="disk", cache_dir=tmp_path)
    assert again.cache_dir == first.cache_dir
    stamps = [f.stat().st_mtime_ns for f in files]
    again[0], again[1]
    assert [f.stat().st_mtime_ns for f in sorted(again.cache_dir.iterdir())] == stamps  # reused

    data = manifest.model_dump(mode="json", exclude_none=True)
    data["preprocessing"]["size"] = [12, 12, 12]
    smaller = parse_manifest(data, path=manifest.path)
    resized = ImageDataset(Cohort.from_manifest(smaller), [0], cache="disk", cache_dir=tmp_path)
    assert resized.cache_dir != first.cache_dir
    assert resized[0]["image"].shape == (1, 12, 12, 12)


def test_uncached_dataset_reads_images_only_when_asked(tmp_path):
    path = generate_cohort(tmp_path / "c", dims=2, subjects=3, size=16)
    cohort = Cohort.from_manifest(path)
    cohort.image_paths[2].unlink()
    ds = ImageDataset(cohort, cache="none")  # builds without touching the images
    assert ds[0]["image"].shape == (1, 16, 16)
    with pytest.raises(MedclInputError, match=r"s00003\.png"):
        ds[2]


def test_loader_shuffle_is_seeded(cohort_3d):
    ds = ImageDataset(cohort_3d, range(12), cache="memory")

    def order(seed):
        return torch.cat([b["index"] for b in make_loader(ds, 5, seed=seed)]).tolist()

    assert order(3) == order(3) != order(4)
    assert sorted(order(3)) == list(range(12))
    assert len(list(make_loader(ds, 5, drop_last=True, shuffle=False))) == 2


def test_collate_multiview_stacks_items():
    items = [
        {
            "views": torch.full((2, 1, 4, 4), float(i)),
            "attributes": torch.tensor([i, 1.0]),
            "missing": torch.tensor([False, i == 1]),
            "labels": torch.tensor([float("nan")]),
            "index": 10 + i,
        }
        for i in range(3)
    ]
    batch = collate_multiview(items)
    assert batch["views"].shape == (3, 2, 1, 4, 4) and batch["views"][2].eq(2).all()
    assert batch["missing"].tolist() == [[False, False], [False, True], [False, False]]
    assert batch["index"].tolist() == [10, 11, 12] and batch["labels"].isnan().all()


@pytest.mark.parametrize(
    "kwargs,culprit",
    [
        ({"cache": "ram"}, "cache"),
        ({"views": 0}, "views"),
        ({"augmentation": "xray2d"}, "xray2d"),
        ({"augmentation": 3}, "augmentation"),
        ({"indices": [0, 99]}, "0..23"),
    ],
)
def test_bad_arguments_name_the_culprit(cohort_3d, kwargs, culprit):
    with pytest.raises(MedclInputError, match=culprit):
        MultiViewDataset(cohort_3d, **kwargs)
