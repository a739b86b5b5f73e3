"""Torch datasets over a :class:`~medcl.data.cohort.Cohort`: multi-view (pretraining) and plain (probing).

The deterministic preprocessing (:func:`~medcl.data.transforms.preprocessing_transforms`) is
computed once per scan and preprocessing and kept in the cache that every run, probe and
comparison shares (:mod:`medcl.data.preprocessed`: on disk, plus a RAM copy with ``cache="memory"``).
Augmentation views are drawn per view from a chain seeded by (seed, epoch, subject index, view),
so they do not depend on the worker, the batch, or the loader's order. With ``backend="batched"``
the dataset serves the preprocessed image only and whole batches of views are made after collate
by :class:`~medcl.data.batch_augment.BatchAugmentation` (same distributions, same seeding rule)
on the training device.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medcl.data.preprocessed import PreprocessedImages
from medcl.data.transforms import (
    BACKENDS,
    augmentation_transforms,
    preset_spec,
    resolve_preset,
    view_seed,
)
from medcl.errors import MedclInputError

if TYPE_CHECKING:
    from medcl.data.batch_augment import BatchAugmentation
    from medcl.data.cohort import Cohort

__all__ = ["ImageDataset", "MultiViewDataset", "collate_multiview", "make_loader"]

CacheMode = Literal["auto", "memory", "disk", "none"]


def _as_cohort(cohort: Cohort | str | os.PathLike) -> Cohort:
    from medcl.data.cohort import Cohort

    return cohort if isinstance(cohort, Cohort) else Cohort.from_manifest(cohort)


def _as_indices(indices: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise MedclInputError(f"a boolean index mask must have {n} entries, got shape {idx.shape}")
        return np.flatnonzero(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise MedclInputError(
            f"indices must be a 1-D sequence of subject row numbers, got {idx.dtype} {idx.shape}"
        )
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise MedclInputError(
            f"indices must lie in 0..{n - 1} (cohort size {n}), got {idx.min()}..{idx.max()}"
        )
    return idx


class MultiViewDataset(Dataset):
    """``V`` augmented views per subject plus its attributes and labels (for pretraining).

    Args:
        cohort: a :class:`~medcl.data.cohort.Cohort` (or a manifest path).
        indices: cohort row numbers to serve (default: all); a boolean mask also works.
        views: views per subject (``V``).
        augmentation: a preset (``"auto"``, ``"mri3d"``, ``"ct3d"``, ``"xray2d"``, ``"none"``) or
            an array transform with ``set_random_state`` (e.g. a MONAI ``Compose``).
        cache: ``"auto"`` (disk for 3D, memory for small 2D subsets), ``"disk"`` (the shared
            cache under ``cache_dir``, read per item), ``"memory"`` (the same, plus the subset in
            RAM) or ``"none"`` (no cache); see :mod:`medcl.data.preprocessed`.
        cache_dir: the cache root (default ``$MEDCL_CACHE_DIR`` or ``~/.cache/medcl/preprocessed``).
        seed: base seed of the views.
        attribute_names, label_names: which attributes / labels (default: all in the manifest).
        augmentation_strength: scales the preset's magnitudes.
        backend: ``"monai"`` (views made here, per view, in the loader workers) or ``"batched"``
            (items carry the un-augmented ``"image"``; make the views after collate with
            :attr:`batch_augmentation`, on the training device). ``"batched"`` needs a preset.

    Item: ``{"views": (V, C, *S) float32, "attributes": (p,) float32 (0 where missing),
    "missing": (p,) bool, "labels": (L,) float32 (NaN = missing), "index": int}`` where
    ``index`` is the cohort row (batched backend: ``"image": (C, *S)`` instead of ``"views"``).
    Views depend only on (seed, epoch, index, view): call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        cohort: Cohort | str | os.PathLike,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        views: int = 2,
        augmentation: str | Callable = "auto",
        cache: CacheMode = "auto",
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        attribute_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        augmentation_strength: float = 1.0,
        cache_workers: int | None = None,
        backend: str = "monai",
    ) -> None:
        self.cohort = _as_cohort(cohort)
        if not isinstance(views, int) or views < 1:
            raise MedclInputError(f"views must be a positive integer, got {views!r}")
        if backend not in BACKENDS:
            raise MedclInputError(f"augmentation backend must be one of {list(BACKENDS)}, got {backend!r}")
        if backend == "batched" and not isinstance(augmentation, str):
            raise MedclInputError(
                "augmentation backend 'batched' needs a preset name, got "
                f"{type(augmentation).__name__}; use backend='monai' for a custom transform"
            )
        self.backend = backend
        manifest = self.cohort.manifest
        dims = manifest.image.spatial_dims
        self.indices = _as_indices(indices, len(self.cohort))
        self.views = views
        self.seed = int(seed)
        self.epoch = 0
        self.spec = None
        if isinstance(augmentation, str):
            preset = resolve_preset(augmentation, dims)
            self.spec = preset_spec(preset, dims, strength=augmentation_strength)
            self.augmentation = augmentation_transforms(
                preset, dims, size=manifest.preprocessing.size, strength=augmentation_strength
            )
        elif callable(augmentation) and hasattr(augmentation, "set_random_state"):
            self.augmentation = augmentation
        else:
            raise MedclInputError(
                "augmentation must be a preset name or a transform with set_random_state "
                f"(e.g. monai.transforms.Compose), got {type(augmentation).__name__}"
            )
        values, missing, self.terms = self.cohort.attribute_matrix(
            None if attribute_names is None else list(attribute_names)
        )
        self.attribute_names = list(
            self.cohort.attribute_names if attribute_names is None else attribute_names
        )
        self.label_names = list(self.cohort.label_names if label_names is None else label_names)
        values, missing = values[self.indices], missing[self.indices]
        self.missing = torch.from_numpy(np.ascontiguousarray(missing, dtype=bool))
        self.attributes = torch.from_numpy(np.nan_to_num(values, nan=0.0).astype(np.float32))
        labels = [self.cohort.label(name)[self.indices] for name in self.label_names]
        stacked = np.stack(labels, axis=1) if labels else np.zeros((len(self.indices), 0))
        self.labels = torch.from_numpy(stacked.astype(np.float32))
        self._images = PreprocessedImages(self.cohort, self.indices, cache, cache_dir, cache_workers)
        self._random_parts = _random_transforms(self.augmentation)

    @property
    def cache_dir(self) -> Path | None:
        """The folder of this dataset's disk cache (None with ``cache="none"``)."""
        return self._images.cache_dir

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views are served (call before iterating a loader)."""
        self.epoch = int(epoch)

    @property
    def batch_augmentation(self) -> BatchAugmentation:
        """The batched view maker for this dataset's preset, strength and seed:
        ``aug(batch["image"], batch["index"], epoch, views)`` -> (n, V, C, *S)."""
        from medcl.data.batch_augment import BatchAugmentation

        if self.spec is None:
            raise MedclInputError("batched augmentation needs a preset; this dataset has a custom transform")
        return BatchAugmentation(self.spec, seed=self.seed)

    def __len__(self) -> int:
        return len(self.indices)

    def view(self, image: torch.Tensor, index: int, view: int) -> torch.Tensor:
        """View number ``view`` of the (preprocessed) image of cohort row ``index``."""
        seed = view_seed(self.seed, self.epoch, index, view)
        if self._random_parts is None:
            self.augmentation.set_random_state(seed=seed)
        else:
            # One generator shared along the chain: MONAI's Compose.set_random_state would build a
            # new RandomState per transform, which costs more than the augmentation of a 2D view.
            state = np.random.RandomState(seed)
            for part in self._random_parts:
                part.set_random_state(state=state)
        return self.augmentation(image)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from monai.data import get_track_meta, set_track_meta

        index = int(self.indices[i])
        image = self._images[i]
        if self.backend == "batched":
            return {"image": image, "attributes": self.attributes[i], "missing": self.missing[i],
                    "labels": self.labels[i], "index": index}
        tracking = get_track_meta()
        set_track_meta(False)  # plain tensors in the random chain: same values, ~30 % faster
        try:
            views = torch.stack([self.view(image, index, v) for v in range(self.views)])
        finally:
            set_track_meta(tracking)
        return {
            "views": views,
            "attributes": self.attributes[i],
            "missing": self.missing[i],
            "labels": self.labels[i],
            "index": index,
        }


class ImageDataset(Dataset):
    """One preprocessed, un-augmented image per subject (encoding, probing, fine-tuning).

    Item: ``{"image": (C, *S) float32, "index": int}`` (``index`` is the cohort row). Batches with
    the default collate. ``cache`` / ``cache_dir`` as in :class:`MultiViewDataset`.
    """

    def __init__(
        self,
        cohort: Cohort | str | os.PathLike,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        cache: CacheMode = "auto",
        cache_dir: str | os.PathLike | None = None,
        cache_workers: int | None = None,
    ) -> None:
        self.cohort = _as_cohort(cohort)
        self.indices = _as_indices(indices, len(self.cohort))
        self._images = PreprocessedImages(self.cohort, self.indices, cache, cache_dir, cache_workers)

    @property
    def cache_dir(self) -> Path | None:
        """The folder of this dataset's disk cache (None with ``cache="none"``)."""
        return self._images.cache_dir

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self._images[i], "index": int(self.indices[i])}


def collate_multiview(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Batch :class:`MultiViewDataset` items: ``{"views": (n, V, C, *S), "attributes": (n, p),
    "missing": (n, p), "labels": (n, L), "index": (n,)}`` (batched backend: ``"image": (n, C, *S)``
    instead of ``"views"``)."""
    if not items:
        raise ValueError("collate_multiview needs at least one item")
    key = "views" if "views" in items[0] else "image"
    return {
        key: torch.stack([it[key] for it in items]),
        "attributes": torch.stack([it["attributes"] for it in items]),
        "missing": torch.stack([it["missing"] for it in items]),
        "labels": torch.stack([it["labels"] for it in items]),
        "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
    }


def _worker_init(worker_id: int) -> None:
    # Views are seeded per (seed, epoch, index, view); this only tames threads and stray RNG use.
    torch.set_num_threads(1)
    base = torch.initial_seed() % 2**32
    np.random.seed(base)
    random.seed(base)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` with a seeded shuffle and the right collate for ``dataset``.

    Workers are re-created every epoch (not persistent), so ``dataset.set_epoch(e)`` before
    iterating reaches them. On Linux workers are forked (cheap: no re-import of MONAI).
    """
    if batch_size < 1:
        raise MedclInputError(f"batch_size must be >= 1, got {batch_size}")
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    collate = collate_multiview if isinstance(base, MultiViewDataset) else None
    context = "fork" if num_workers > 0 and sys.platform.startswith("linux") else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(int(seed)),
        worker_init_fn=_worker_init if num_workers > 0 else None,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
        multiprocessing_context=context,
    )


def _random_transforms(transform: Callable) -> list | None:
    """The random transforms of a flat MONAI ``Compose``; None for anything else (nested
    ``Compose``/``OneOf`` draw with their own generator, so they keep MONAI's seeding)."""
    from monai.transforms import Compose, Randomizable

    if not isinstance(transform, Compose) or any(isinstance(t, Compose) for t in transform.transforms):
        return None
    return [t for t in transform.transforms if isinstance(t, Randomizable)]
