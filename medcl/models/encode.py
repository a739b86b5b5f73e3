"""Features of a dataset with a frozen encoder: batched, in order, no augmentation, with a progress bar.

Evaluation (probes, comparisons, :mod:`medcl.evaluate.features`) and pretraining's online probe
encode images the same way, through :func:`encode_dataset`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def encode_dataset(
    encoder: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Features ``(len(dataset), F)`` of an :class:`~medcl.data.datasets.ImageDataset`, in order.

    Use it to encode the same (memory-cached) images with several encoders without reloading them.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm  # not tqdm.auto: its asyncio class iterates a DataLoader twice (workers start twice)

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = torch.device(device or default_device())
    was_training = encoder.training
    encoder.eval()
    moved = move_parameters(encoder, device)
    chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            bar = tqdm(loader, desc="encoding", unit="batch", disable=not progress, leave=False)
            for batch in bar:
                out = moved(batch["image"].to(device, non_blocking=True))
                chunks.append(out.float().cpu().numpy())
    finally:
        encoder.train(was_training)
    if not chunks:
        return np.zeros((0, int(getattr(encoder, "out_features", 0) or 0)), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def move_parameters(encoder: nn.Module, device: torch.device) -> nn.Module:
    """Move to ``device`` when the module holds parameters (an onnxruntime wrapper stays put)."""
    if any(True for _ in encoder.parameters()):
        return encoder.to(device)
    return encoder
