"""Encode a cohort once with a frozen encoder: batched, no augmentation, with a progress bar.

Probes, the demo and reports all start from the same ``(n, F)`` feature matrix; computing it once
and reusing it for every fold and training size is what keeps probing cheap. ``encode_dataset`` (and
``default_device``) live in :mod:`medcl.models.encode`, so that pretraining's online probe uses them
too; they are importable from here as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medcl.models.encode import default_device, encode_dataset

__all__ = ["default_device", "encode_cohort", "encode_dataset", "run_images"]

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medcl.data.cohort import Cohort


def encode_cohort(
    encoder: nn.Module,
    cohort: Cohort | str | os.PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    cache: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Features of every subject (or of ``indices``), in that order.

    Each image goes through the manifest's deterministic preprocessing only (no augmentation),
    then through ``encoder`` in eval mode without gradients.

    Args:
        encoder: ``(n, C, *spatial) -> (n, F)`` module (e.g. from :func:`medcl.load_encoder`).
        cohort: a :class:`medcl.data.cohort.Cohort` or a manifest path.
        indices: cohort rows to encode (default: all, in table order).
        batch_size, num_workers: DataLoader settings.
        device: where the encoder runs (default: GPU when available).
        cache, cache_dir: as for :class:`medcl.data.datasets.ImageDataset` (the shared cache).
        progress: show a tqdm progress bar on stderr.

    Returns:
        float32 array ``(len(indices), F)``.
    """
    from medcl.data.datasets import ImageDataset

    dataset = ImageDataset(cohort, indices, cache=cache, cache_dir=cache_dir)
    return encode_dataset(encoder, dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                          progress=progress)


def run_images(run_dir: str | os.PathLike, cohort: Cohort, indices: Sequence[int] | np.ndarray,
               cache: str | None = None) -> Any:
    """An :class:`~medcl.data.datasets.ImageDataset` of ``indices`` read through the cache of the
    run's config, so probing and fine-tuning a run reuse the images its pretraining preprocessed.

    ``cache`` overrides the run's mode (e.g. ``"disk"`` for a single pass), except that a run made
    with ``cache: none`` (nothing written) stays uncached.
    """
    from medcl.data.datasets import ImageDataset
    from medcl.pretrain.run_dir import RunDir

    settings = RunDir(run_dir).cache_settings()
    mode = settings["cache"] if cache is None or settings["cache"] == "none" else cache
    return ImageDataset(cohort, indices, cache=mode, cache_dir=settings["cache_dir"])
