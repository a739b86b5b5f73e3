"""Argument checks shared by the losses (one message format: argument, expected, received)."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from medcl.errors import MedclInputError


def check_views(z: object, name: str = "z", *, min_subjects: int = 2) -> torch.Tensor:
    """Check that ``z`` is a floating (n, V, d) tensor with n >= min_subjects subjects and V >= 2 views.

    A loss that gathers its batch checks each shard with ``min_subjects=1`` and the gathered
    global batch with :func:`check_subjects`.
    """
    if not isinstance(z, torch.Tensor):
        raise MedclInputError(f"{name}: expected a torch.Tensor of shape (n, V, d), got {type(z).__name__}")
    if z.dim() != 3:
        raise MedclInputError(
            f"{name}: expected shape (n, V, d) (subjects, views, features), got shape {tuple(z.shape)}"
        )
    if not z.is_floating_point():
        raise MedclInputError(f"{name}: expected a floating-point tensor, got dtype {z.dtype}")
    _, v, d = z.shape
    if v < 2:
        raise MedclInputError(f"{name}: expected at least 2 views per subject (V >= 2), got V = {v}")
    if d < 1:
        raise MedclInputError(f"{name}: expected at least 1 feature (d >= 1), got d = {d}")
    return check_subjects(z, name, min_subjects)


def check_subjects(z: torch.Tensor, name: str = "z", min_subjects: int = 2) -> torch.Tensor:
    """Check that z (n, ...) holds at least ``min_subjects`` subjects (the global batch, after a gather)."""
    if z.shape[0] < min_subjects:
        raise MedclInputError(
            f"{name}: expected at least {min_subjects} subjects (n >= {min_subjects}), got n = {z.shape[0]}"
        )
    return z


def check_positive(value: object, name: str) -> float:
    """Check that a hyper-parameter is a finite number > 0 and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MedclInputError(f"{name}: expected a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise MedclInputError(f"{name}: expected a finite number > 0, got {value!r}")
    return value


def check_per_subject(x: object, n: int, name: str, *, integer: bool = False) -> torch.Tensor:
    """Check a per-subject vector (n,) (or (n, 1)) and return it flattened to (n,)."""
    if not isinstance(x, torch.Tensor):
        raise MedclInputError(f"{name}: expected a torch.Tensor of shape ({n},), got {type(x).__name__}")
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1 or x.shape[0] != n:
        raise MedclInputError(f"{name}: expected shape ({n},) (one value per subject), got {tuple(x.shape)}")
    if integer and (x.is_floating_point() or x.is_complex()):
        raise MedclInputError(f"{name}: expected integer class labels, got dtype {x.dtype}")
    return x


def class_codes(labels: torch.Tensor) -> torch.Tensor:
    """Integer class codes (n,) from a label vector given as integers or as integral floats."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        if torch.isnan(labels).any() or (labels != labels.round()).any():
            raise MedclInputError("labels: expected integer class codes without missing values")
        labels = labels.long()
    return labels


def full_precision(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a loss with autocast disabled and half-precision z upcast to float32.

    Mixed-precision training (bf16 / fp16 autocast) would otherwise run the Gram matrices,
    log-sum-exps and the Cholesky factorisation in half precision (or fail: no half Cholesky).
    """

    @functools.wraps(fn)
    def wrapper(z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(z, torch.Tensor) and z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        device_type = z.device.type if isinstance(z, torch.Tensor) else "cpu"
        try:
            guard = torch.autocast(device_type=device_type, enabled=False)
        except RuntimeError:  # a device type without autocast support
            guard = contextlib.nullcontext()
        with guard:
            return fn(z, *args, **kwargs)

    return wrapper
